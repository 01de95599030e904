"""Stage 3, the lowerings that apply primitives to values already lowered: arithmetic and
matrix products with the batch axis, the heads of attention, volumes, reductions. They inline
no module (lower.py does), so they need only the plan, the frame's sizes (`f.size`) and the
arguments.
"""

from __future__ import annotations

from dp.dsl import typed as T
from dp.dsl.builtins import Builtin, dropout_rate
from dp.dsl.instances import conv_padding

from .plan import Atom, Const, Plan, Var
from .primitives import PRIMITIVES


def heads(plan: Plan, tprog, f, b: Builtin, e: T.TPrim, args: list[Atom]) -> Var:
    """split_heads: [B, n, d] -> [B, h, n, d / h] and join_heads the way back, primitives
    with the heads as their parameter (fuse.py folds them into attention); transpose swaps
    the last two axes."""
    x = args[0]
    if e.op == "transpose":
        axes = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
        return plan.add("transpose", (x,), e.span, axes=axes)
    if e.op == "join_heads":
        return plan.add("join_heads", (x,), e.span, heads=x.shape[-3])
    return plan.add("split_heads", (x,), e.span, heads=f.size(dict(e.attrs)["h"]))


def volume(plan: Plan, tprog, f, b: Builtin, e: T.TPrim, args: list[Atom]) -> Var:
    x = args[0]
    shape = x.shape[:1] + tuple(f.size(d) for d in e.type.shape)
    if e.op == "flatten":
        return plan.add("reshape", (x,), e.span, shape=shape)
    if e.op == "global_avgpool2d":  # the mean of each channel
        return plan.add("mean", (x,), e.span, axes=(2, 3))
    attrs = {k: f.size(v) for k, v in e.attrs if v is not None}
    if e.op in ("conv2d", "conv1d"):
        attrs["padding"] = conv_padding(e.op, args[1].shape[2:], attrs.get("padding"), e.span)
    if attrs.get("groups") == 1:  # the plain convolution's parameters stay as they were
        del attrs["groups"]
    return plan.add(e.op, tuple(args), e.span, **attrs)


def dropout(plan: Plan, tprog, f, b: Builtin, e: T.TPrim, args: list[Atom]) -> Atom:
    """Nothing when p is 0 (a transformer's default: its plan stays as it was); else the
    primitive, numbered among the plan's dropouts so that each draws its own mask."""
    p = dropout_rate(f.real(dict(e.attrs)["p"]), e.span)
    if p == 0:
        return args[0]
    site = sum(q.prim == "dropout" for q in plan.eqns)
    return plan.add("dropout", (args[0],), e.span, p=p, site=site)


def last_axis(plan: Plan, tprog, f, b: Builtin, e: T.TPrim, args: list[Atom]) -> Var:
    """softmax, log_softmax, normalize: along the last axis of one example."""
    return plan.add(b.primitives[0], (args[0],), e.span)


def reduce_all(plan: Plan, tprog, f, b: Builtin, e, args: list[Atom]) -> Atom:
    """sum, mean, max: every entry of one example."""
    x = args[0]
    start = 1 if x.batched else 0
    axes = tuple(range(start, len(x.shape)))
    if not axes:
        return x
    return plan.add(b.primitives[0], (x,), e.span, axes=axes)


def reduce_sequence(plan: Plan, tprog, f, b: Builtin, e, args: list[Atom]) -> Var:
    """seq_mean, seq_max over the positions; seq_first, seq_last take one."""
    x = args[0]
    axis = 1 if x.batched else 0  # a parameter's sequence has no batch axis
    if b.primitives[0] != "take":
        return plan.add(b.primitives[0], (x,), e.span, axes=(axis,))
    i = 0 if b.name == "seq_first" else x.shape[axis] - 1
    return plan.add("take", (x,), e.span, axis=axis, index=i)


def token(plan: Plan, tprog, f, b: Builtin, e, args: list[Atom]) -> Atom:
    """Scores stand for the distribution over tokens."""
    return args[0]


def example_rank(a: Atom) -> int:
    if isinstance(a, Const):
        return 0
    return len(a.shape) - (1 if a.batched else 0)


def _align(plan: Plan, a: Atom, other_rank: int, span) -> Atom:
    """A batched scalar next to a batched tensor gets trailing unit axes (B,) -> (B, 1)."""
    if isinstance(a, Var) and a.batched and example_rank(a) == 0 and other_rank > 0:
        return plan.add("reshape", (a,), span, shape=a.shape + (1,) * other_rank)
    return a


def binary(plan: Plan, op: str, a: Atom, b: Atom, span) -> Atom:
    """An elementwise operation; a batched scalar gets unit axes to meet the other side, and
    the primitive's rule broadcasts (a parameter matrix plus a batched scalar is batched)."""
    if isinstance(a, Const) and isinstance(b, Const):
        value = {"add": a.value + b.value, "sub": a.value - b.value,
                 "mul": a.value * b.value, "div": a.value / b.value if b.value else float("inf")}
        return Const(value[op])
    a2 = _align(plan, a, example_rank(b), span)
    b2 = _align(plan, b, example_rank(a), span)
    return plan.add(op, (a2, b2), span)


def matmul(plan: Plan, a: Var, b: Var, span) -> Var:
    """`a @ b` computed for each example as the checker types it (vectors, matrices, stacks of
    matrices), with the batch axis first on each side computed from the input. NumPy would read
    a batched vector as a matrix whose rows are the examples: on the right it becomes a
    one-column matrix of its example, on the left a one-row one when the right side is batched
    too (against a parameter the examples may be the rows: `x @ W` is one GEMM). The unit axes
    are dropped after: the result is the matmul rule's on one example, the batch axis first."""
    ra, rb = example_rank(a), example_rank(b)
    if not a.batched and b.batched and ra == 2 and rb == 1:  # `W x`: one GEMM over the batch
        return plan.add("linear", (b, a), span)
    batched = a.batched or b.batched
    ea, eb = (x.shape[1:] if x.batched else x.shape for x in (a, b))
    want = (((a if a.batched else b).shape[:1] if batched else ())
            + tuple(PRIMITIVES["matmul"].shape(ea, eb)))
    row, col = ra == 1 and a.batched and b.batched, rb == 1 and b.batched
    a2 = _expand(plan, a, a.shape[:-1] + (1,) + a.shape[-1:], span) if row else a
    b2 = _expand(plan, b, b.shape + (1,), span) if col else b
    out = plan.add("matmul", (a2, b2), span)
    return out if out.shape == want else _expand(plan, out, want, span)


def _expand(plan: Plan, x: Var, shape, span) -> Var:
    """x with unit axes added or dropped (a reshape, a view at run time)."""
    return plan.add("reshape", (x,), span, shape=tuple(shape))


def select(plan: Plan, op: str, x: Atom, y: Atom, a: Atom, b: Atom, span) -> Var:
    """where(x op y, a, b) of four values or numbers, broadcast (a batched scalar gets unit
    axes to meet the others, as in `binary`)."""
    values = (x, y, a, b)
    rank = max(example_rank(v) for v in values)
    return plan.add("where", tuple(_align(plan, v, rank, span) for v in values), span, op=op)


def same_shape_after(plan: Plan, value: Atom, other: Atom, span) -> bool:
    """Whether where(..., value, other + 1) has value's own shape and batch axis: then it can
    stand for value in the expressions that use it."""
    if isinstance(value, Const):
        return False
    if isinstance(other, Const):
        return True
    if other.batched and not value.batched or example_rank(other) > example_rank(value):
        return False
    shape = other.shape + (1,) * example_rank(value) if other.batched and \
        example_rank(other) == 0 else other.shape
    return PRIMITIVES["add"].shape(value.shape, shape) == value.shape
