"""Dimensions: literals, variables and their arithmetic (docs/language.md); substitution and
unification.

A `Subst` maps variables to dimensions. `unify` returns a new substitution and never mutates it;
it raises `Mismatch` when two dimensions cannot be equal. Rigid variables (the dimension names of
the signature being checked) may only equal themselves; flexible ones (a callee's names, fresh at
each call) are solved for. Both sides are compared as polynomials, so an equation linear in its
one open variable is solved whatever the order of its terms (`n + 1 = 1 + k` gives n = k,
`n / 2 = k` gives n = 2 * k); any other waits in a list of deferred constraints, tried again each
time a variable is bound.

Where a variable is bound, the substitution also records what fixed it (`Subst.fixed`: a
`Fixed`, from the `Why` the constraint was made with), so that a shape error can say where
each size in it came from (provenance.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple, Union

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class DimVar:
    name: str
    uid: int
    rigid: bool = False
    zero: bool = False  # it may be 0 (a padding); every other size is at least 1
    owner: str = field(default="", compare=False)  # the callee whose signature it instantiates

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """`Pair's n` for a callee's variable, so that it is not taken for the caller's n."""
        return f"{self.owner}'s {self.name}" if self.owner and not self.rigid else self.name


@dataclass(frozen=True, slots=True)
class DimExpr:
    op: str  # + - * / (exact) // (floor)
    left: "Dim"
    right: "Dim"

    def __str__(self) -> str:
        return dim_text(self, str)


Dim = Union[int, DimVar, DimExpr]


class Why(NamedTuple):
    """Why a constraint `value == want` holds, for the variables it binds: a variable of the
    expected side is fixed by the value (`the type of x`), one of the value's side by what is
    expected of it (`the expected type`, `its use as Small's input`: a later use)."""

    value: str
    want: str
    span: object = None  # errors.Span


class Fixed(NamedTuple):
    """What fixed one variable: words and where."""

    text: str
    span: object = None


class Subst(dict):
    """DimVar -> Dim, and `fixed`: DimVar -> Fixed for each variable bound with a reason."""

    __slots__ = ("fixed",)

    def __init__(self, *args, fixed: dict | None = None):
        super().__init__(*args)
        self.fixed = dict(fixed or {})


def fixed_of(s: dict) -> dict:
    return getattr(s, "fixed", {})


_LEVEL = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}


def dim_text(d: Dim, name) -> str:
    """d as dp writes it, each variable written as `name(v)` says."""
    if isinstance(d, DimVar):
        return name(d)
    if not isinstance(d, DimExpr):
        return str(d)
    level = _LEVEL[d.op]
    left = _wrap(d.left, level, name)
    right = _wrap(d.right, level + 1, name)  # left-associative: a - (b - c) keeps its parens
    return f"{left} {d.op} {right}"


def _wrap(d: Dim, level: int, name) -> str:
    text = dim_text(d, name)
    return f"({text})" if isinstance(d, DimExpr) and _LEVEL[d.op] < level else text


def ordered_vars(d: Dim) -> list[DimVar]:
    """The variables of d in the order they are written."""
    if isinstance(d, DimVar):
        return [d]
    if isinstance(d, DimExpr):
        return list(dict.fromkeys(ordered_vars(d.left) + ordered_vars(d.right)))
    return []


def fresh(name: str, rigid: bool = False, zero: bool = False, owner: str = "") -> DimVar:
    return DimVar(name, next(_ids), rigid, zero, owner)


class Mismatch(Exception):
    """Two dimensions that cannot be equal; `reason` says why in words.

    `plain` marks a reason that only restates the inequality (`3 != 4`), which a message that
    already shows both sides leaves out. A deferred constraint that fails when it is tried
    again carries the `origin` it was deferred with; `subst` is the substitution at the
    failure, so a message can show what was known by then; `pair` the two sides that
    failed and `axis` their axis, when a tensor's axis failed where it was unified."""

    def __init__(self, reason: str = "", plain: bool = False):
        super().__init__(reason)
        self.reason, self.plain = reason, plain
        self.origin: object = None
        self.subst: Subst | None = None
        self.pair: tuple | None = None
        self.axis: int | None = None


class Pending(NamedTuple):
    """A deferred constraint a == b, and where it was made (whatever the caller passed)."""

    a: "Dim"
    b: "Dim"
    origin: object = None
    why: Why | None = None


def resolve(d: Dim, s: Subst) -> Dim:
    """Apply a substitution and fold constant arithmetic; an expression something was
    substituted into is brought to its simplest form (`k - 1 + 2` is `k + 1`)."""
    if isinstance(d, DimVar):
        if d in s:
            return resolve(s[d], s)
        return d
    if isinstance(d, DimExpr):
        left, right = resolve(d.left, s), resolve(d.right, s)
        if left is d.left and right is d.right:
            return d
        out = dim_from(d.op, left, right)
        return simplify(out) if isinstance(out, DimExpr) else out
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


# --- polynomials: {monomial: coefficient}, a monomial a sorted tuple of atoms -----------------
def _poly(d: Dim) -> dict:
    """d as a polynomial {monomial: coefficient}, so `c * h / 2` equals `c * (h / 2)`.

    Exact division by a number is a rational coefficient; floor division and division by a
    variable stay opaque atoms.
    """
    if isinstance(d, int):
        return {(): Fraction(d)} if d else {}
    if isinstance(d, DimVar) or d.op == "//" or (d.op == "/" and not isinstance(d.right, int)
                                                  or d.right == 0):
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
        out = _add(a, b, 1 if d.op == "+" else -1)
    return {m: c for m, c in out.items() if c}


def _add(a: dict, b: dict, sign: int) -> dict:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + sign * c
    return {m: c for m, c in out.items() if c}


def _atom_key(x) -> tuple:
    return (0, x.name, x.uid) if isinstance(x, DimVar) else (1, str(x), 0)


def _from_poly(p: dict) -> Dim:
    """The polynomial as a dimension: terms of higher degree first, the number last, and one
    exact division by the common denominator (`(k - 1) / 2`)."""
    den = math.lcm(*(c.denominator for c in p.values())) if p else 1
    terms = sorted(p.items(), key=lambda t: (-len(t[0]), [_atom_key(x) for x in t[0]]))
    terms.sort(key=lambda t: t[1] < 0)  # stable: positive terms first, so `3 - k`, not `-k + 3`
    out: Dim = 0
    for m, c in terms:
        n = int(c * den)
        term: Dim = abs(n)
        for x in sorted(m, key=_atom_key):
            term = dim_from("*", term, x)
        if out == 0 and n < 0:
            out = dim_from("-", 0, term) if m else n
        elif out == 0:
            out = term
        else:
            out = dim_from("+" if n > 0 else "-", out, term)
    return dim_from("/", out, den) if den != 1 else out


def simplify(d: Dim) -> Dim:
    """d in the normal form of its polynomial (numbers folded, like terms collected)."""
    return _from_poly(_poly(d))


def free_vars(d: Dim) -> set[DimVar]:
    if isinstance(d, DimVar):
        return {d}
    if isinstance(d, DimExpr):
        return free_vars(d.left) | free_vars(d.right)
    return set()


def _poly_vars(p: dict) -> set[DimVar]:
    return {v for m in p for x in m for v in free_vars(x)}


# --- solving ----------------------------------------------------------------------------------
def _solution(diff: dict, v: DimVar) -> Dim | None:
    """The value of v that makes the polynomial `diff` zero, when diff is linear in v with a
    coefficient that divides the rest (`2 * n - 2 * k`: n = k); None when it is not."""
    if any(x != v and v in free_vars(x) for m in diff for x in m):
        return None  # v inside a floor division or a division by a variable
    if any(m.count(v) > 1 for m in diff):
        return None
    coef = {tuple(x for x in m if x != v): c for m, c in diff.items() if v in m}
    rest = {m: c for m, c in diff.items() if v not in m}
    if len(coef) != 1:
        return None  # v times a sum: not divided here
    (unit, c), = coef.items()
    value = {}
    for m, r in rest.items():
        left = list(m)
        for x in unit:
            if x not in left:
                return None
            left.remove(x)
        value[tuple(left)] = -r / c
    if set(value) <= {()}:
        number = value.get((), Fraction(0))
        if number.denominator != 1:
            raise Mismatch(f"{v.label} would be {number}, which is not a whole number")
        return int(number)
    out = _from_poly(value)
    if _never_whole(value):
        raise Mismatch(f"{v.label} would be {out}, which is never a whole number")
    return out


def _never_whole(p: dict) -> bool:
    """True when no sizes make the polynomial a whole number: scaled to whole coefficients
    over a denominator, the number is not a multiple of what the other terms can make
    (`(2 * k + 1) / 2`)."""
    den = math.lcm(*(c.denominator for c in p.values()))
    step = math.gcd(den, *(int(c * den) for m, c in p.items() if m))
    return int(p.get((), 0) * den) % step != 0


def _unify(a: Dim, b: Dim, s: Subst, deferred: list | None, origin, why: Why | None) -> Subst:
    """One constraint a == b (a the value's side): solved, deferred (appended to `deferred`),
    or a Mismatch."""
    a, b = resolve(a, s), resolve(b, s)
    if a == b:
        return s
    for x, y in ((a, b), (b, a)):  # a bare open variable takes the other side as it is written
        if isinstance(x, DimVar) and not x.rigid and x not in free_vars(y):
            return _bind(x, y, s, _fixed(why, x is a))
    diff = _add(_poly(a), _poly(b), -1)
    if not diff:
        return s
    flexible = {v for v in _poly_vars(diff) if not v.rigid}
    if len(flexible) == 1:
        v = next(iter(flexible))
        value = _solution(diff, v)
        if value is not None:
            return _bind(v, value, s, _fixed(why, v in free_vars(a)))
    if flexible and deferred is not None:
        deferred.append(Pending(a, b, origin, why))
        return s
    raise Mismatch(f"{a} != {b}", plain=True)


def _fixed(why: Why | None, of_value: bool) -> Fixed | None:
    """A variable of the value's side is fixed by what is expected, one of the other by the
    value."""
    if why is None:
        return None
    return Fixed(why.want if of_value else why.value, why.span)


def _bind(v: DimVar, d: Dim, s: Subst, fixed: Fixed | None = None) -> Subst:
    """s with the flexible v bound to d (and what fixed it)."""
    if isinstance(d, int) and (d < 0 or d == 0 and not v.zero):
        raise Mismatch(f"{v.label} would be {d}, but sizes must be positive")
    if v in free_vars(d):
        raise Mismatch(f"{v.label} would have to contain itself")
    out = Subst(s, fixed=fixed_of(s))
    out[v] = d
    if fixed is not None:
        out.fixed[v] = fixed
    return out


def unify(a: Dim, b: Dim, s: Subst, deferred: list | None = None, origin=None,
          why: Why | None = None) -> Subst:
    """Make a and b equal under s. With a `deferred` list, a constraint not solvable yet is
    kept there (with `origin`), and the list is retried whenever this binds a variable.
    A failure carries the two sides (`pair`); `why` is recorded for what this binds."""
    try:
        out = _unify(a, b, s, deferred, origin, why)
    except Mismatch as m:
        if m.pair is None:
            m.pair = (a, b)
        raise
    if deferred and out is not s:
        out = settle(out, deferred)
    return out


def settle(s: Subst, deferred: list) -> Subst:
    """Try the deferred constraints again until a whole pass binds nothing; the ones still open
    stay in `deferred`. One that fails raises its Mismatch with its origin."""
    changed = True
    while changed and deferred:
        changed = False
        pending = list(deferred)
        deferred.clear()
        for i, p in enumerate(pending):
            try:
                out = _unify(p.a, p.b, s, deferred, p.origin, p.why)
            except Mismatch as m:
                deferred.extend(pending[i:])
                m.origin, m.subst, m.pair = p.origin, s, (p.a, p.b)
                raise
            changed = changed or out is not s
            s = out
    return s


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
