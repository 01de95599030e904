"""Semantic types: tensors of one example, and module signatures; printed in dp notation.

`R^(m, n)` and `(R^n)^m` are both stored as shape (m, n); `groups` remembers how the type was
written so messages print it back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dims import Dim, Mismatch, Subst, Why, resolve, unify


@dataclass(frozen=True, slots=True)
class Tensor:
    shape: tuple[Dim, ...]
    vocab: Dim | None = None  # Token[V] elements when set
    groups: tuple[int, ...] = ()  # sizes of the ^ groups, outermost first

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        text = "R" if self.vocab is None else f"Token[{self.vocab}]"
        groups = self.groups if sum(self.groups) == len(self.shape) else (len(self.shape),)
        pos = len(self.shape)
        for i, size in enumerate(reversed(groups)):
            if size == 0:
                continue
            dims = self.shape[pos - size:pos]
            pos -= size
            if i > 0:
                text = f"({text})"
            inner = ", ".join(str(d) for d in dims)
            simple = len(dims) == 1 and (isinstance(dims[0], int) or " " not in str(dims[0]))
            text += f"^{inner}" if simple else f"^({inner})"
        return text


def scalar() -> Tensor:
    return Tensor(())


def apply_subst(t: Tensor, s: Subst) -> Tensor:
    vocab = resolve(t.vocab, s) if t.vocab is not None else None
    return Tensor(tuple(resolve(d, s) for d in t.shape), vocab, t.groups)


def unify_tensors(a: Tensor, b: Tensor, s: Subst, deferred: list | None = None,
                  origin=None, why: Why | None = None) -> Subst:
    """Unify the sizes axis by axis (see dims.unify for `deferred`, `origin` and `why`; `a` is
    the value's side); a Mismatch carries the substitution of the axes before the one that
    failed, so a message can show what they fixed, and that axis (when it failed there)."""
    if (a.vocab is None) != (b.vocab is None):
        raise Mismatch("a token is not a real vector", plain=True)
    if len(a.shape) != len(b.shape):
        raise Mismatch(f"rank {len(a.shape)} != {len(b.shape)}", plain=True)
    pairs = ([(a.vocab, b.vocab)] if a.vocab is not None else []) + list(zip(a.shape, b.shape))
    first = 1 if a.vocab is not None else 0
    for i, (x, y) in enumerate(pairs):
        try:
            s = unify(x, y, s, deferred, origin, why)
        except Mismatch as m:
            if m.subst is None:
                m.subst = s
                m.axis = i - first if i >= first else None
            raise
    return s


@dataclass(frozen=True, slots=True)
class ModSig:
    """`(args) -> result` over the dimension variables `dims` (generic per use)."""

    args: tuple[Tensor, ...]
    result: Tensor
    dims: tuple  # DimVar, in order of first appearance

    def __str__(self) -> str:
        if len(self.args) == 1:
            left = str(self.args[0])
        else:
            left = "(" + ", ".join(str(a) for a in self.args) + ")"
        return f"{left} -> {self.result}"

    def substitute(self, s: Subst) -> "ModSig":
        return ModSig(tuple(apply_subst(a, s) for a in self.args), apply_subst(self.result, s),
                      self.dims)
