"""Dimensions: literals, variables and the arithmetic of DESIGN 3.2; substitution and unification.

A `Subst` maps variables to dimensions. `unify` returns a new substitution and never mutates;
it raises `Mismatch` when two dimensions cannot be equal. Rigid variables (the dimension
names of the signature being checked) may only equal themselves.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from dataclasses import dataclass
from typing import Union

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class DimVar:
    name: str
    uid: int
    rigid: bool = False

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class DimExpr:
    op: str  # + - * / (exact) // (floor)
    left: "Dim"
    right: "Dim"

    def __str__(self) -> str:
        level = _LEVEL[self.op]
        left = _wrap(self.left, level)
        right = _wrap(self.right, level + 1)  # left-associative: a - (b - c) keeps its parens
        return f"{left} {self.op} {right}"


Dim = Union[int, DimVar, DimExpr]
Subst = dict  # DimVar -> Dim


_LEVEL = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}


def _wrap(d: Dim, level: int) -> str:
    return f"({d})" if isinstance(d, DimExpr) and _LEVEL[d.op] < level else str(d)


def fresh(name: str, rigid: bool = False) -> DimVar:
    return DimVar(name, next(_ids), rigid)


class Mismatch(Exception):
    """Two dimensions that cannot be equal; `reason` says why in words."""

    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


def resolve(d: Dim, s: Subst) -> Dim:
    """Apply a substitution and fold constant arithmetic."""
    if isinstance(d, DimVar):
        if d in s:
            return resolve(s[d], s)
        return d
    if isinstance(d, DimExpr):
        return dim_from(d.op, resolve(d.left, s), resolve(d.right, s))
    return d


def _fold(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "//":
        if b <= 0:
            raise Mismatch(f"{a} // {b} divides by a size that is not positive")
        return a // b
    if b == 0 or a % b:
        raise Mismatch(f"{a} / {b} is not a whole number")
    return a // b


def _poly(d: Dim) -> dict:
    """d as a polynomial {monomial: coefficient}, so `c * h / 2` equals `c * (h / 2)`.

    Exact division by a number is a rational coefficient; floor division and division by a
    variable stay opaque atoms.
    """
    if isinstance(d, int):
        return {(): Fraction(d)} if d else {}
    if isinstance(d, DimVar) or d.op == "//" or (d.op == "/" and not isinstance(d.right, int)):
        return {(d,): Fraction(1)}
    a, b = _poly(d.left), _poly(d.right)
    if d.op == "/":
        return {m: c / d.right for m, c in a.items()}
    if d.op == "*":
        out: dict = {}
        for ma, ca in a.items():
            for mb, cb in b.items():
                m = tuple(sorted(ma + mb, key=repr))
                out[m] = out.get(m, 0) + ca * cb
    else:
        sign = 1 if d.op == "+" else -1
        out = dict(a)
        for m, c in b.items():
            out[m] = out.get(m, 0) + sign * c
    return {m: c for m, c in out.items() if c}


def free_vars(d: Dim) -> set[DimVar]:
    if isinstance(d, DimVar):
        return {d}
    if isinstance(d, DimExpr):
        return free_vars(d.left) | free_vars(d.right)
    return set()


def _solve(d: Dim, target: int, s: Subst) -> Subst:
    """Solve `d == target` for the one flexible variable in d (linear, exact)."""
    if isinstance(d, DimVar):
        return _bind(d, target, s)
    assert isinstance(d, DimExpr)
    a, b, op = d.left, d.right, d.op
    if op == "//":
        raise _Deferred()  # floor division has many solutions; wait for the operands
    if isinstance(b, int):
        inverse = {"+": target - b, "-": target + b, "*": None, "/": target * b}[op]
        if op == "*":
            if b == 0 or target % b:
                raise Mismatch(f"{target} is not a multiple of {b}")
            inverse = target // b
        return _solve(a, inverse, s)
    if isinstance(a, int):
        if op == "+":
            return _solve(b, target - a, s)
        if op == "-":
            return _solve(b, a - target, s)
        if op == "*":
            if a == 0 or target % a:
                raise Mismatch(f"{target} is not a multiple of {a}")
            return _solve(b, target // a, s)
    raise _Deferred()


class _Deferred(Exception):
    """A constraint not solvable yet (more than one unknown); checked again later."""


def _bind(v: DimVar, d: Dim, s: Subst) -> Subst:
    if v.rigid:
        raise Mismatch(f"{v} stands for any size here, so it cannot be fixed to {d}")
    if isinstance(d, int) and d <= 0:
        raise Mismatch(f"{v} would be {d}, but sizes must be positive")
    if v in free_vars(d):
        raise Mismatch(f"{v} would have to contain itself")
    out = dict(s)
    out[v] = d
    return out


def unify(a: Dim, b: Dim, s: Subst, deferred: list | None = None) -> Subst:
    """Make a and b equal under s; unsolvable-for-now constraints go to `deferred`."""
    a, b = resolve(a, s), resolve(b, s)
    if a == b or _poly(a) == _poly(b):
        return s
    if isinstance(a, DimVar) and not a.rigid:
        return _bind(a, b, s)
    if isinstance(b, DimVar) and not b.rigid:
        return _bind(b, a, s)
    if isinstance(a, int) and isinstance(b, int):
        raise Mismatch(f"{a} != {b}")
    try:
        if isinstance(b, int) and isinstance(a, DimExpr):
            return _solve(a, b, s)
        if isinstance(a, int) and isinstance(b, DimExpr):
            return _solve(b, a, s)
    except _Deferred:
        pass
    flexible = [v for v in free_vars(a) | free_vars(b) if not v.rigid]
    if flexible and deferred is not None:
        deferred.append((a, b))
        return s
    raise Mismatch(f"{a} != {b}")


def dim_from(text_op: str, left: Dim, right: Dim) -> Dim:
    """Build `left op right`, folding constants and units (raises Mismatch on inexact division)."""
    if isinstance(left, int) and isinstance(right, int):
        return _fold(text_op, left, right)
    if text_op in ("+", "-") and right == 0:
        return left
    if text_op == "+" and left == 0:
        return right
    if text_op in ("*", "/", "//") and right == 1:
        return left
    if text_op == "*" and left == 1:
        return right
    if text_op == "*" and 0 in (left, right):
        return 0
    return DimExpr(text_op, left, right)
