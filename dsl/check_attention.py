"""Stage 2, the builtins of attention and transformers: the heads of a sequence, matrix
transpose, the causal mask, layer normalisation, and `repeat(L, Block, x)`: their type rules
(their records are in builtins.py).

Attention is written in the language with them, in the matrix form of the lecture:
`softmax(causal(q @ transpose(k) / sqrt(e))) @ v` over `split_heads(...)`; the lowering
fuses what pays (interpreter/core/fuse.py).
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .check_volumes import describe
from .dims import Mismatch, dim_from, unify
from .errors import plural
from .signatures import _err
from .types import Tensor, apply_subst, unify_tensors


def _real(c, name: str, a, e) -> tuple[T.TExpr, Tensor]:
    x = c.expr(a)
    t = apply_subst(x.type, c.subst)
    if t.vocab is not None:
        raise _err("type", f"{name} needs real values, but {describe(a)} is {t}", e.span)
    return x, t


def normalize_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x, t = _real(c, name, args[0], e)
    if t.rank == 0:
        raise _err("shape", f"normalize needs a vector, but {describe(args[0])} is {t}", e.span)
    return T.TPrim(name, (x,), x.type, e.span)


def split_heads_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x, t = _real(c, name, args[0], e)
    if "h" not in sizes:
        raise _err("arity", "split_heads needs the number of heads: split_heads(xs; h = 4)",
                   e.span)
    return _split_heads(c, x, t, sizes["h"], args[0], e)


def _matrix(c, name: str, args, e, want: str, rank: int = 2) -> tuple[T.TExpr, Tensor]:
    x, t = _real(c, name, args[0], e)
    if t.rank < 2 or (rank == 3 and t.rank != 3):
        raise _err("shape", f"{name} needs {want}, but {describe(args[0])} is {t}", e.span)
    return x, t


def transpose_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x, t = _matrix(c, name, args, e, "a matrix")
    shape = t.shape[:-2] + (t.shape[-1], t.shape[-2])
    return T.TPrim(name, (x,), Tensor(shape), e.span)


def join_heads_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x, t = _matrix(c, name, args, e, "heads R^(h, n, e)", 3)
    h, n, k = t.shape
    return T.TPrim(name, (x,), Tensor((n, dim_from("*", h, k)), None, (1, 1)), e.span)


def causal_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x, t = _matrix(c, name, args, e, "square scores R^(n, n)")
    try:
        c.subst = unify(t.shape[-1], t.shape[-2], c.subst, c.deferred)
    except Mismatch:
        raise _err("shape", f"causal masks square scores (a query and a key per position), "
                   f"but {describe(args[0])} is {t}", e.span) from None
    return T.TPrim(name, (x,), x.type, e.span)


def _split_heads(c, x: T.TExpr, t: Tensor, h, a, e) -> T.TPrim:
    """(R^d)^n -> R^(h, n, d / h): each vector cut into h parts, the heads first."""
    if t.rank != 2:
        raise _err("shape", f"split_heads needs a sequence of vectors (R^d)^n, but "
                   f"{describe(a)} is {t}", e.span)
    n, d = t.shape
    try:
        part = dim_from("/", d, h)
    except Mismatch:
        raise _err("shape", f"{h} heads do not divide the width {d} of {describe(a)}",
                   e.span, "the number of heads must divide d") from None
    return T.TPrim("split_heads", (x,), Tensor((h, n, part)), e.span, (("h", h),))


def repeat_rule(c, name: str, args, sizes, e) -> T.TMap:
    """`repeat(L, Block, x, ...)`: L instances of Block one after the other, each with its own
    parameters; Block must give back the type of x. Further arguments (a decoder's memory) go
    unchanged to every instance."""
    count_ast, mod, x_ast, *more = args
    count = c.dim_value("repeat", ast.KwArg("L", count_ast, count_ast.span))
    ref = c.module_ref(mod)
    sig = c._ref_sig(ref)
    if len(sig.args) != 1 + len(more):
        raise _err("arity", f"repeat passes {ref.name} {plural(1 + len(more), 'argument')}, "
                   f"but it takes {len(sig.args)} ({ref.name}: {sig})", mod.span)
    x = c.expr(x_ast)
    extra = tuple(c.expr(a) for a in more)
    kw = mod.kwargs if isinstance(mod, ast.Call) else ()
    call = c.apply(ref, ref.name, sig, (x,) + extra, [x_ast, *more], kw, e)
    try:
        c.subst = unify_tensors(x.type, call.type, c.subst, c.deferred)
    except Mismatch:
        raise _err("shape", f"repeat needs a module that gives back what it takes, but "
                   f"{ref.name} takes {apply_subst(x.type, c.subst)} here and gives "
                   f"{apply_subst(call.type, c.subst)}", mod.span, f"{ref.name}: {sig}") from None
    return T.TMap("repeat", call, x, apply_subst(x.type, c.subst), e.span, count, extra)
