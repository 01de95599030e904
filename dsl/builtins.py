"""The table of builtins: every function the language has without a definition, one record each.

A record says how the builtin is called (its positional arguments and the sizes it takes by
keyword), its type rule (a function of the definition's checker and the call), its signature
when it is passed as a module value (`act = relu`, `over = seq_max`), if it can be, and what
it lowers to: the primitives it becomes, and the lowering function that emits them when it is
not one primitive applied to its argument. dsl/ never imports the interpreter, so both are
names; interpreter/core/lower.py maps lowering names to code, and tests hold every name to a
registered primitive or lowering function (tests/test_builtins.py).

Adding a builtin is one record here and its primitive (docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import typed as T
from .check_attention import (
    causal_rule,
    join_heads_rule,
    normalize_rule,
    repeat_rule,
    split_heads_rule,
    transpose_rule,
)
from .check_sequences import map_rule, seq_reduce_rule, token_rule
from .check_volumes import (
    conv1d_rule,
    conv2d_rule,
    describe,
    flatten_rule,
    global_pool_rule,
    pool_rule,
)
from .check_where import where_rule
from .dims import fresh
from .errors import DpError, plural
from .signatures import _err
from .types import ModSig, Tensor, scalar


@dataclass(frozen=True)
class Builtin:
    name: str
    args: tuple[str, ...]  # its positional arguments, by what they are
    rule: Callable  # (checker, name, args, sizes, call) -> typed expression
    sizes: tuple[str, ...] = ()  # the sizes it takes by keyword (`stride`, `h`)
    zero: tuple[str, ...] = ()  # those of its sizes that may be 0 (`padding`)
    reals: tuple[str, ...] = ()  # the real numbers it takes by keyword (dropout's `p`)
    more: bool = False  # further positional arguments may follow (repeat's memory)
    usage: str = ""  # how to call it, when the arguments are wrong
    value: ModSig | None = None  # its signature as a module value; None: it cannot be one
    primitives: tuple[str, ...] = ()  # what it becomes
    lowering: str | None = None  # the lowering function; None: primitives[0] on the argument
    fold: Callable[[float], float] | None = None  # its value on a number (`sqrt(d)`)

    def call_text(self) -> str:
        named = self.sizes + self.reals
        sizes = "; " + ", ".join(f"{s} = ..." for s in named) if named else ""
        return f"{self.name}({', '.join(self.args)}{', ...' if self.more else ''}{sizes})"


def check_call(c, b: Builtin, args, kwargs, e) -> T.TExpr:
    """The arguments a record allows, then its type rule."""
    sizes = {}
    for kw in kwargs:
        if kw.name in b.reals:
            sizes[kw.name] = c.real_value(b.name, kw)
            continue
        if kw.name not in b.sizes:
            have = ", ".join(b.sizes + b.reals) or "no size arguments"
            raise _err("name", f"{b.name} has no argument '{kw.name}'; it has {have}", kw.span)
        sizes[kw.name] = c.dim_value(b.name, kw, kw.name in b.zero)
    n = len(b.args)
    if len(args) < n or (len(args) > n and not b.more):
        if b.usage:
            raise _err("arity", f"{b.name} takes {b.usage}", e.span)
        raise _err("arity", f"{b.name} takes {plural(n, 'argument')}, but {len(args)} "
                   f"{'was' if len(args) == 1 else 'were'} given", e.span)
    return b.rule(c, b.name, tuple(args), sizes, e)


# --- the rules of the one-argument functions on real values --------------------------------
def _real(c, name: str, a, e) -> T.TExpr:
    x = c.expr(a)
    if x.type.vocab is not None:
        raise _err("type", f"{name} needs real values, but {describe(a)} is {x.type}", e.span)
    return x


def _elementwise_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x = _real(c, name, args[0], e)
    return T.TPrim(name, (x,), x.type, e.span)


def _last_axis_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x = _real(c, name, args[0], e)
    if x.type.rank == 0:
        raise _err("shape", f"{name} needs a vector, but {describe(args[0])} is {x.type}",
                   e.span)
    return T.TPrim(name, (x,), x.type, e.span)


def _dropout_rule(c, name: str, args, sizes, e) -> T.TPrim:
    """`dropout(x; p = 0.1)`: the value itself, each entry zeroed with probability p in
    training; p is a number, or a real argument of the definition, checked where it is known
    (dsl/instances.py)."""
    x = _real(c, name, args[0], e)
    p = sizes.get("p", 0.1)
    if not isinstance(p, T.RealArg):
        dropout_rate(p, e.span)
    return T.TPrim(name, (x,), x.type, e.span, (("p", p),))


def _reduction_rule(c, name: str, args, sizes, e) -> T.TPrim:
    x = _real(c, name, args[0], e)
    return T.TPrim(name, (x,), scalar(), e.span)


# --- signatures as module values ------------------------------------------------------------
def _scalar_fn() -> ModSig:
    """`R -> R`: applied to a tensor, elementwise (the shape-keeping ones: to the whole value)."""
    return ModSig((scalar(),), scalar(), ())


def _vector_to_scalar() -> ModSig:
    n = fresh("n", True)
    return ModSig((Tensor((n,)),), scalar(), (n,))


def _sequence_to_element() -> ModSig:
    d, n = fresh("d", True), fresh("n", True)
    return ModSig((Tensor((n, d), None, (1, 1)),), Tensor((d,), None, (1,)), (d, n))


def _scores_to_token() -> ModSig:
    v = fresh("V", True)
    return ModSig((Tensor((v,)),), Tensor((), v), (v,))


# --- the table --------------------------------------------------------------------------------
def _elementwise(name: str, fold=None) -> Builtin:
    return Builtin(name, ("x",), _elementwise_rule, value=_scalar_fn(), primitives=(name,),
                   fold=fold)


def _table() -> dict[str, Builtin]:
    x = ("x",)
    records = [
        _elementwise("relu"), _elementwise("tanh"), _elementwise("sigmoid"),
        _elementwise("gelu"), _elementwise("softplus"),
        _elementwise("exp", math.exp), _elementwise("log", math.log),
        _elementwise("sqrt", math.sqrt), _elementwise("abs", abs),
        _elementwise("square", lambda v: v * v),
        # along the last axis; passed as `R -> R` they apply to the whole value
        Builtin("softmax", x, _last_axis_rule, value=_scalar_fn(), primitives=("softmax",),
                lowering="last_axis"),
        Builtin("log_softmax", x, _last_axis_rule, value=_scalar_fn(),
                primitives=("log_softmax",), lowering="last_axis"),
        Builtin("normalize", x, normalize_rule, value=_scalar_fn(), primitives=("layernorm",),
                lowering="last_axis"),
        Builtin("causal", ("scores",), causal_rule, value=_scalar_fn(),
                primitives=("causal_softmax",), lowering="causal"),
        # a where a comparison holds, b elsewhere; the branch not chosen has no gradient
        Builtin("where", ("condition", "a", "b"), where_rule, primitives=("where",),
                lowering="where"),
        # entries zeroed at random in training (inverted: the others scaled by 1 / (1 - p))
        Builtin("dropout", x, _dropout_rule, reals=("p",), primitives=("dropout",),
                lowering="dropout"),
        # all the entries of one example to one number
        *(Builtin(r, x, _reduction_rule, value=_vector_to_scalar(), primitives=(r,),
                  lowering="reduce_all", fold=lambda v: v) for r in ("sum", "mean", "max")),
        # volumes
        Builtin("conv2d", ("x", "W", "b"), conv2d_rule, ("stride", "padding", "groups"),
                ("padding",), primitives=("conv2d",), lowering="volume"),
        Builtin("maxpool2d", x, pool_rule, ("size", "stride"), primitives=("maxpool2d",),
                lowering="volume"),
        Builtin("avgpool2d", x, pool_rule, ("size", "stride"), primitives=("avgpool2d",),
                lowering="volume"),
        Builtin("global_avgpool2d", x, global_pool_rule, primitives=("mean",),
                lowering="volume"),
        Builtin("conv1d", ("xs", "W", "b"), conv1d_rule, ("stride", "padding"), ("padding",),
                primitives=("conv1d",), lowering="volume"),
        Builtin("flatten", x, flatten_rule, primitives=("reshape",), lowering="volume"),
        # sequences and tokens
        Builtin("map", ("M", "xs"), map_rule, usage="a module and a sequence: map(M, xs)",
                primitives=("reshape",), lowering="map"),
        Builtin("scan", ("cell", "xs"), map_rule, usage="a module and a sequence: scan(cell, xs)",
                primitives=("fill", "take", "stack", "linear", "add", "concat", "rnn_scan",
                            "lstm_scan"), lowering="scan"),
        Builtin("token", ("scores",), token_rule, value=_scores_to_token(), lowering="token"),
        *(Builtin(s, ("xs",), seq_reduce_rule, value=_sequence_to_element(),
                  primitives=(p,), lowering="reduce_sequence")
          for s, p in (("seq_mean", "mean"), ("seq_max", "max"), ("seq_first", "take"),
                       ("seq_last", "take"))),
        # attention and transformers
        Builtin("split_heads", ("xs",), split_heads_rule, ("h",),
                primitives=("split_heads",), lowering="heads"),
        Builtin("join_heads", x, join_heads_rule, primitives=("join_heads",), lowering="heads"),
        Builtin("transpose", x, transpose_rule, primitives=("transpose",), lowering="heads"),
        Builtin("repeat", ("L", "Block", "x"), repeat_rule, more=True,
                usage="a count, a module and a value: repeat(L, Block, x), or "
                      "repeat(L, Block, x, memory) to give every block the memory too",
                lowering="repeat"),
    ]
    return {b.name: b for b in records}


BUILTINS: dict[str, Builtin] = _table()


def dropout_rate(p: float, span) -> float:
    """A probability of dropping an entry: 0 (dropout does nothing) up to, not including, 1.
    The checker asks it of a number written at the call, the instance pass and lowering of a
    real argument's value (dsl/instances.py)."""
    if not 0 <= p < 1:
        raise DpError("type", f"dropout's p is the probability of zeroing an entry, at least 0 "
                      f"and below 1, but it is {p:g} here", span)
    return p


def value_sig(name: str, span) -> ModSig:
    """The signature of builtin `name` passed as a module; an error if it cannot be passed."""
    b = BUILTINS[name]
    if b.value is None:
        can = ", ".join(n for n, r in BUILTINS.items() if r.value is not None)
        raise _err("type", f"{name} cannot be passed as a module: apply it to its arguments, "
                   f"{b.call_text()}", span, f"the builtins that can be passed: {can}")
    return b.value
