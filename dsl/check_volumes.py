"""Stage 2, the builtins on volumes and convolutions: the type rules of conv2d, conv1d,
maxpool2d, avgpool2d, global_avgpool2d and flatten (their records are in builtins.py).

A volume is `R^(c, h, w)`. The rules are written over dimensions, so a generic `Conv` is checked
once; sizes that must divide exactly (`h / 2` for a tiling pool) fail where they become numbers.
A convolution pads to the same size unless `padding` is given: (k - 1) / 2 on each side of an
axis whose kernel is k (k odd), whatever the stride.
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
    """`conv2d(x, W, b)`, same padding; `conv2d(x, W, b; stride = s, padding = p, groups = g)`."""
    xs = _reals(c, name, args)
    return _conv(c, xs, _volume(c, name, xs[0], args[0]), args, dict(sizes), e)


def pool_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    """`maxpool2d(x)`, `avgpool2d(x; size = k)`, `maxpool2d(x; size = k, stride = s)`."""
    xs = _reals(c, name, args)
    return _pool(c, name, xs[0], _volume(c, name, xs[0], args[0]), sizes, e)


def global_pool_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    """`global_avgpool2d(x)`: the mean of each channel, `R^(c, h, w) -> R^c`."""
    xs = _reals(c, name, args)
    ch = _volume(c, name, xs[0], args[0])[0]
    return T.TPrim(name, (xs[0],), Tensor((ch,)), e.span)


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


def _divide(name: str, what: str, h: Dim, k: Dim, x, e) -> Dim:
    try:
        return dim_from("/", h, k)
    except Mismatch:
        raise _err("shape", f"{name} of size {k} needs a {what} that is a multiple of {k}, "
                   f"but {describe(x)} has {what} {h}", e.span,
                   f"pad or crop the input, or pool with a stride: {name}(x; size = 3, "
                   "stride = 2)") from None


def _pool(c, name: str, xe: T.TExpr, x, attrs: dict, e) -> T.TPrim:
    ch, h, w = x
    size = attrs.get("size", 2)
    stride = attrs.get("stride", size)
    if stride == size:  # tiling windows: the sizes must divide exactly
        arg = e.args[0]
        shape = (ch, _divide(name, "height", h, size, arg, e),
                 _divide(name, "width", w, size, arg, e))
    else:  # overlapping windows: floor, like every framework
        try:
            shape = (ch, _strided(h, 0, size, stride), _strided(w, 0, size, stride))
        except Mismatch as m:
            raise _err("shape", f"{name}: {m.reason}", e.span) from None
    return T.TPrim(name, (xe,), Tensor(shape), e.span, (("size", size), ("stride", stride)))


def _strided(h: Dim, pad: Dim, k: Dim, stride: Dim) -> Dim:
    """(h + 2 * pad - k) // stride + 1, folded as far as the sizes allow."""
    span = dim_from("-", dim_from("+", h, dim_from("*", 2, pad)), k)
    if isinstance(span, int) and span < 0:
        raise Mismatch(f"the window {k} is larger than the input {h}")
    return dim_from("+", dim_from("//", span, stride), 1)


def _same(name: str, kernel: tuple, e) -> list[Dim]:
    """The same padding of each axis, (k - 1) / 2: a kernel needs a middle pixel."""
    if any(isinstance(k, int) and k % 2 == 0 for k in kernel):
        shown = " by ".join(str(k) for k in kernel) if len(kernel) > 1 else f"{kernel[0]}"
        raise _err("shape", f"{name} pads to the same size only with an odd kernel, but the "
                   f"kernel is {shown}", e.span,
                   f"give the padding: {name}(x, W, b; padding = ...)")
    return [dim_from("/", dim_from("-", k, 1), 2) for k in kernel]


def _output(name: str, sizes: tuple, kernel: tuple, attrs: dict, e) -> tuple:
    """The output sizes along the convolved axes, and the attributes lowering reads
    (`padding` None: the same padding, which the instance pass and lowering compute)."""
    given = "padding" in attrs
    stride, pad = attrs.setdefault("stride", 1), attrs.setdefault("padding", None)
    pads = [pad] * len(kernel) if given else _same(name, kernel, e)
    if not given and stride == 1:
        return sizes
    try:
        return tuple(_strided(n, p, k, stride) for n, p, k in zip(sizes, pads, kernel,
                                                                 strict=True))
    except Mismatch as m:
        raise _err("shape", f"{name}: {m.reason}", e.span) from None


def _per_group(ch: Dim, groups: Dim, subst: dict) -> Dim:
    """The input channels each filter sees: ch / groups (1 when groups is the channels)."""
    if groups == 1:
        return ch
    if resolve(groups, subst) == resolve(ch, subst):
        return 1
    return dim_from("/", ch, groups)


def _agree(c, name: str, e, pairs) -> None:
    """Unify each (size, size, what it means) pair; the first that cannot be is the error."""
    for a, b, msg in pairs:
        try:
            c.subst = unify(a, b, c.subst, c.deferred)
        except Mismatch:
            raise _err("shape", f"{name}: {msg}", e.span) from None


def _conv(c, xs, x, args, attrs: dict, e) -> T.TPrim:
    ch, h, w = x
    ft = apply_subst(xs[1].type, c.subst)
    bt = apply_subst(xs[2].type, c.subst)
    fname, bname = describe(args[1]), describe(args[2])
    if ft.rank != 4:
        raise _err("shape", f"conv2d needs filters R^(c2, c, kh, kw), but {fname} is {ft}",
                   args[1].span)
    if bt.rank != 1:
        raise _err("shape", f"conv2d needs a bias R^c2, but {bname} is {bt}", args[2].span)
    c2, cin, kh, kw = ft.shape
    groups = attrs.setdefault("groups", 1)
    try:
        per = _per_group(ch, groups, c.subst)
        if isinstance(c2, int) and isinstance(groups, int) and c2 % groups:
            raise Mismatch(f"{groups} groups do not divide the {c2} channels {fname} makes")
    except Mismatch as m:
        reason = m.reason if "groups" in m.reason else (
            f"{groups} groups do not divide the {ch} channels of {describe(args[0])}")
        raise _err("shape", f"conv2d: {reason}", e.span) from None
    if groups == 1:
        channels = f"the filters {fname} take {cin} channels, but {describe(args[0])} has {ch}"
    else:
        channels = (f"the filters {fname} take {cin} channels a group, but {describe(args[0])} "
                    f"has {ch} in {groups} groups ({per} a group)")
    _agree(c, "conv2d", e, ((cin, per, channels),
                            (bt.shape[0], c2, f"the bias {bname} has {bt.shape[0]} entries, "
                             f"but the filters make {c2} channels")))
    kernel = (resolve(kh, c.subst), resolve(kw, c.subst))
    shape = (c2,) + _output("conv2d", (h, w), kernel, attrs, e)
    return T.TPrim("conv2d", tuple(xs), Tensor(shape), e.span, tuple(sorted(attrs.items())))


def conv1d_rule(c, name: str, args, sizes: dict, e) -> T.TPrim:
    """`conv1d(xs, W, b)`: filters W: R^(e, d, k) along a sequence (R^d)^n, to (R^e)^n with
    the same padding; `conv1d(xs, W, b; stride = s, padding = p)`."""
    xs = _reals(c, name, args)
    t, ft, bt = (apply_subst(a.type, c.subst) for a in xs)
    if t.rank != 2:
        raise _err("shape", f"conv1d needs a sequence of vectors (R^d)^n, but "
                   f"{describe(args[0])} is {t}", args[0].span)
    fname, bname = describe(args[1]), describe(args[2])
    if ft.rank != 3:
        raise _err("shape", f"conv1d needs filters R^(e, d, k), but {fname} is {ft}",
                   args[1].span)
    if bt.rank != 1:
        raise _err("shape", f"conv1d needs a bias R^e, but {bname} is {bt}", args[2].span)
    n, d = t.shape
    out, din, k = ft.shape
    _agree(c, "conv1d", e, ((din, d, f"the filters {fname} take vectors of {din}, but "
                             f"{describe(args[0])} has vectors of {d}"),
                            (bt.shape[0], out, f"the bias {bname} has {bt.shape[0]} entries, "
                             f"but the filters make vectors of {out}")))
    attrs = dict(sizes)
    (length,) = _output("conv1d", (n,), (resolve(k, c.subst),), attrs, e)
    return T.TPrim("conv1d", tuple(xs), Tensor((length, out), None, (1, 1)), e.span,
                   tuple(sorted(attrs.items())))
