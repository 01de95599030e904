"""Stage 2, the builtins on volumes: the type rules of conv2d, maxpool2d and flatten
(their records are in builtins.py).

A volume is `R^(c, h, w)`. The rules are written over dimensions, so a generic `Conv` is checked
once; sizes that must divide exactly (`h / 2` for a tiling pool) fail where they become numbers.
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .dims import Dim, Mismatch, dim_from, resolve, unify
from .signatures import _err
from .types import Tensor, apply_subst


def _reals(c, name: str, args) -> list[T.TExpr]:
    xs = [c.expr(a) for a in args]
    for x, a in zip(xs, args, strict=True):
        if x.type.vocab is not None:
            raise _err("type", f"{name} needs real values, but {describe(a)} is {x.type}",
                       a.span)
    return xs


def conv2d_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    """`conv2d(x, W, b)`, same padding; `conv2d(x, W, b; stride = s, padding = p)`."""
    xs = _reals(c, name, args)
    return _conv(c, xs, _volume(c, name, xs[0], args[0]), args, dict(sizes), e)


def maxpool2d_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    """`maxpool2d(x)`, `maxpool2d(x; size = k)`, `maxpool2d(x; size = k, stride = s)`."""
    xs = _reals(c, name, args)
    return _maxpool(c, xs[0], _volume(c, name, xs[0], args[0]), sizes, e)


def flatten_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    return _flatten(c, _reals(c, name, args)[0], e)


def describe(e) -> str:
    if isinstance(e, ast.Name):
        return e.name
    if isinstance(e, ast.Call):
        return f"{e.func}(...)"
    return "the expression"


def _volume(c, name: str, x: T.TExpr, a) -> tuple[Dim, ...]:
    t = apply_subst(x.type, c.subst)
    if t.rank != 3:
        raise _err("shape", f"{name} needs a volume R^(c, h, w), but {describe(a)} is {t}",
                   a.span)
    return t.shape


def _flatten(c, x: T.TExpr, e) -> T.TPrim:
    if x.type.rank == 0:
        raise _err("shape", "flatten needs a tensor, but got a scalar R", e.span)
    size: Dim = 1
    for d in apply_subst(x.type, c.subst).shape:
        size = dim_from("*", size, d)
    return T.TPrim("flatten", (x,), Tensor((size,)), e.span)


def _divide(what: str, h: Dim, k: Dim, x, e) -> Dim:
    try:
        return dim_from("/", h, k)
    except Mismatch:
        raise _err("shape", f"maxpool2d of size {k} needs a {what} that is a multiple of {k}, "
                   f"but {describe(x)} has {what} {h}", e.span,
                   "pad or crop the input, or pool with a stride: maxpool2d(x; size = 3, "
                   "stride = 2)") from None


def _maxpool(c, xe: T.TExpr, x, attrs: dict, e) -> T.TPrim:
    ch, h, w = x
    size = attrs.get("size", 2)
    stride = attrs.get("stride", size)
    if stride == size:  # tiling windows: the sizes must divide exactly
        arg = e.args[0]
        shape = (ch, _divide("height", h, size, arg, e), _divide("width", w, size, arg, e))
    else:  # overlapping windows: floor, like every framework
        try:
            shape = (ch, _strided(h, 0, size, stride), _strided(w, 0, size, stride))
        except Mismatch as m:
            raise _err("shape", f"maxpool2d: {m.reason}", e.span) from None
    return T.TPrim("maxpool2d", (xe,), Tensor(shape), e.span,
                   (("size", size), ("stride", stride)))


def _strided(h: Dim, pad: Dim, k: Dim, stride: Dim) -> Dim:
    """(h + 2 * pad - k) // stride + 1, folded as far as the sizes allow."""
    span = dim_from("-", dim_from("+", h, dim_from("*", 2, pad)), k)
    if isinstance(span, int) and span < 0:
        raise Mismatch(f"the window {k} is larger than the input {h}")
    return dim_from("+", dim_from("//", span, stride), 1)


def _conv(c, xs, x, args, attrs: dict, e) -> T.TPrim:
    ch, h, w = x
    ft = apply_subst(xs[1].type, c.subst)
    bt = apply_subst(xs[2].type, c.subst)
    fname, bname = describe(args[1]), describe(args[2])
    if ft.rank != 4:
        raise _err("shape", f"conv2d needs filters R^(c2, c, k, k), but {fname} is {ft}",
                   args[1].span)
    if bt.rank != 1:
        raise _err("shape", f"conv2d needs a bias R^c2, but {bname} is {bt}", args[2].span)
    c2, cin, k, k2 = ft.shape
    for a, b, msg in ((cin, ch, f"the filters {fname} take {cin} channels, but "
                       f"{describe(args[0])} has {ch}"),
                      (k, k2, f"the filters {fname} must be square, but they are {k} by {k2}"),
                      (bt.shape[0], c2, f"the bias {bname} has {bt.shape[0]} entries, but "
                       f"the filters make {c2} channels")):
        try:
            c.subst = unify(a, b, c.subst, c.deferred)
        except Mismatch:
            raise _err("shape", f"conv2d: {msg}", e.span) from None
    k = resolve(k, c.subst)
    if not attrs:  # same padding, stride 1: the output keeps the input's height and width
        if isinstance(k, int) and k % 2 == 0:
            raise _err("shape", f"conv2d pads to the same size only with an odd kernel, but "
                       f"the kernel is {k} by {k}", e.span,
                       "give the padding: conv2d(x, W, b; padding = ...)")
        shape = (c2, h, w)
        attrs = {"stride": 1, "padding": None}
    else:
        stride, pad = attrs.setdefault("stride", 1), attrs.setdefault("padding", 0)
        try:
            shape = (c2, _strided(h, pad, k, stride), _strided(w, pad, k, stride))
        except Mismatch as m:
            raise _err("shape", f"conv2d: {m.reason}", e.span) from None
    return T.TPrim("conv2d", tuple(xs), Tensor(shape), e.span, tuple(sorted(attrs.items())))
