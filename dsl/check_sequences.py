"""Stage 2, the builtins on sequences and tokens: `map`, `scan`, `E[t]`, `token`, and the
reductions of a sequence to one element (`seq_mean`, `seq_max`, `seq_first`, `seq_last`).

`map(M, xs)` and `scan(cell, xs)` are one call site of M: one set of parameters shared by
every element (docs/language.md). Their call is checked like any other, on placeholder
arguments that stand for one element (and, for scan, the running state).
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .check_volumes import describe
from .dims import Mismatch, fresh, unify
from .errors import plural
from .signatures import _err
from .types import Tensor, apply_subst, unify_tensors


def element(t: Tensor) -> Tensor:
    """The type of one element of a sequence type: (R^d)^n -> R^d, Token[V]^n -> Token[V]."""
    groups = t.groups or (t.rank,)
    rest = groups[1:] if groups[0] == 1 else (groups[0] - 1,) + groups[1:]
    return Tensor(t.shape[1:], t.vocab, rest)


def sequence_of(t: Tensor, n) -> Tensor:
    groups = t.groups or ((t.rank,) if t.rank else ())
    return Tensor((n,) + t.shape, t.vocab, (1,) + groups)


def _sequence(c, e: ast.Expr, what: str) -> T.TExpr:
    xs = c.expr(e)
    if xs.type.rank == 0:
        raise _err("shape", f"{what} needs a sequence, but {describe(e)} is "
                   f"{apply_subst(xs.type, c.subst)}", e.span)
    return xs


def token_rule(c, name: str, args, sizes, e) -> T.TPrim:
    """`token(s)`: scores R^V as a token of a vocabulary of V."""
    x = c.expr(args[0])
    t = apply_subst(x.type, c.subst)
    if t.rank != 1 or t.vocab is not None:
        raise _err("shape", f"token needs scores R^V, one per token of the vocabulary, but "
                   f"{describe(args[0])} is {t}", e.span)
    return T.TPrim("token", (x,), Tensor((), t.shape[0]), e.span)


def seq_reduce_rule(c, name: str, args, sizes, e) -> T.TPrim:
    """`seq_mean(xs)` and the like: a sequence to one of its elements' type."""
    xs = _sequence(c, args[0], name)
    if xs.type.vocab is not None:
        raise _err("type", f"{name} needs real values, but {describe(args[0])} is {xs.type}",
                   e.span)
    return T.TPrim(name, (xs,), element(xs.type), e.span)


def map_rule(c, name: str, args, sizes, e) -> T.TMap:
    """`map(M, xs)` and `scan(cell, xs)`."""
    mod, seq_ast = args
    ref = c.module_ref(mod)
    sig = c._ref_sig(ref)
    want = 2 if name == "scan" else 1
    if len(sig.args) != want:
        what = "a cell (state, input) -> state" if name == "scan" else "a module of one argument"
        raise _err("arity", f"{name} needs {what}, but {ref.name} takes "
                   f"{plural(len(sig.args), 'argument')} ({ref.name}: {sig})", mod.span)
    xs = _sequence(c, seq_ast, name)
    n = apply_subst(xs.type, c.subst).shape[0]
    one = ast.Name(f"an element of {describe(seq_ast)}", seq_ast.span)
    placeholders = [T.TLocal(T.ELEMENT, element(xs.type), seq_ast.span)]
    sources = [one]
    if name == "scan":
        state = sig.args[0]
        shape = tuple(fresh("s") for _ in state.shape)
        placeholders.insert(0, T.TLocal(T.STATE, Tensor(shape, state.vocab, state.groups),
                                        e.span))
        sources.insert(0, ast.Name("the state", e.span))
    kw = mod.kwargs if isinstance(mod, ast.Call) else ()
    call = c.apply(ref, ref.name, sig, tuple(placeholders), sources, kw, e)
    if name == "scan":
        try:
            c.subst = unify_tensors(placeholders[0].type, call.type, c.subst, c.deferred)
        except Mismatch:
            raise _err("shape", f"scan needs a cell whose state comes back the same, but "
                       f"{ref.name} is {sig}", mod.span) from None
    return T.TMap(name, call, xs, sequence_of(apply_subst(call.type, c.subst), n), e.span)


def index(c, e: ast.Index) -> T.TPrim:
    """`E[t]`: the row of E for token t, where E: R^(V, ...) and t: Token[V]."""
    table, tok = c.expr(e.table), c.expr(e.index)
    tt, it = apply_subst(table.type, c.subst), apply_subst(tok.type, c.subst)
    if it.vocab is None or it.rank != 0:
        raise _err("type", f"only a token can index: {describe(e.index)} is {it}",
                   e.index.span, "a token has the type Token[V]")
    if tt.rank == 0 or tt.vocab is not None:
        raise _err("shape", f"{describe(e.table)} is {tt}; a token indexes the rows of a "
                   "matrix R^(V, d)", e.table.span)
    try:
        c.subst = unify(tt.shape[0], it.vocab, c.subst, c.deferred)
    except Mismatch:
        raise _err("shape", f"{describe(e.table)} has {tt.shape[0]} rows, but "
                   f"{describe(e.index)} is a token of a vocabulary of {it.vocab}",
                   e.span) from None
    groups = tt.groups[1:] if tt.groups and tt.groups[0] == 1 else ()
    return T.TPrim("embed", (tok, table), Tensor(tt.shape[1:], None, groups), e.span)
