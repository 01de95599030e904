"""The primitive table (stage: run time): shape rule, forward and backward of every batched op.

Each primitive is one `Primitive` record, registered by its family module (`elementwise`,
`linalg`, `reduce`, `losses`, `conv`, `pool`, `sequence`, `dropout`) with the three rules side
by side. The calling convention, which the lowered plan relies on:

- `shape(*in_shapes, **params) -> out_shape`; raises ValueError for incompatible shapes.
- `forward(*inputs, **params) -> ndarray`, with the input dtype (float32 at run time, float64 in
  the gradient checks); array operands positional, static parameters keyword-only.
- `backward(g, out, inputs, wants, **params) -> tuple`: one entry per input, an ndarray of
  exactly that input's shape, or None where `wants[i]` is False or the input is an integer
  array (labels). Unwanted gradients are not computed. Rules never write into `g`, `out` or
  `inputs`; they may return views of `g` (identity, reshape, transpose), so callers that
  accumulate gradients must do so out of place. A backward may also take `into=`: a tuple with
  one array or None per input, where it may write that input's gradient and return that array
  (linear does, for dW and db: the executor's views of the flat gradient buffer); the executor
  gives it only to rules whose signature has it.
- Saved residuals: a primitive registered with `saves=True` keeps something from its forward
  that its backward needs and would otherwise recompute (maxpool2d's argmax, conv2d's im2col
  columns, lstm_scan's gates and cells). Its `forward` returns `(out, saved)` and its
  `backward` takes it as the keyword `saved=` (which may be None: conv2d saves only small
  columns and rebuilds large ones); the executor holds `saved` in a slot of its own between the
  two passes. Callers that do not know which kind they hold use `apply_forward` and
  `apply_backward`.

- Keyed primitives (`keyed=True`: dropout) draw random numbers in training: their `forward`
  and `backward` take the keyword `key=`, the training step's `(seed, step)`, or None when the
  plan runs for evaluation; the executor sets it before each forward pass.

`kinks` lists predicates `(inputs, params, tol) -> bool` saying whether a sample lies within
`tol` of a point where the primitive is not differentiable; the gradient-check sampler draws
again when one fires (tests/gradcheck.py). `integer_inputs` are the operand positions that
hold integer arrays (never differentiated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Shape = tuple[int, ...]
Kink = Callable[[tuple, dict, float], bool]


@dataclass(frozen=True)
class Primitive:
    name: str
    shape: Callable[..., Shape]
    forward: Callable[..., np.ndarray]
    backward: Callable[..., tuple]
    smooth: bool
    kinks: tuple[Kink, ...] = ()
    integer_inputs: tuple[int, ...] = ()
    saves: bool = False
    keyed: bool = False


PRIMITIVES: dict[str, Primitive] = {}


def register(name: str, *, shape: Callable[..., Shape], forward: Callable[..., np.ndarray],
             backward: Callable[..., tuple], smooth: bool, kinks: tuple[Kink, ...] = (),
             integer_inputs: tuple[int, ...] = (), saves: bool = False,
             keyed: bool = False) -> Primitive:
    """Add one primitive to the table (each name once)."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} registered twice")
    prim = Primitive(name, shape, forward, backward, smooth, tuple(kinks), tuple(integer_inputs),
                     saves, keyed)
    PRIMITIVES[name] = prim
    return prim


def get(name: str) -> Primitive:
    """The primitive called `name`; a missing one fails in JAX's style."""
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise KeyError(f"vjp for {name!r} not registered (no primitive of that name)") from None


def apply_forward(prim: Primitive, *inputs, **params) -> tuple:
    """(out, saved) of any primitive; saved is None for those that save nothing."""
    if prim.saves:
        return prim.forward(*inputs, **params)
    return prim.forward(*inputs, **params), None


def apply_backward(prim: Primitive, g, out, inputs: tuple, wants: tuple, saved=None,
                   **params) -> tuple:
    """prim.backward, handing `saved` (from apply_forward) to the primitives that take it."""
    if prim.saves:
        return prim.backward(g, out, inputs, wants, saved=saved, **params)
    return prim.backward(g, out, inputs, wants, **params)


# ---------------------------------------------------------------------------------------------
# Shared helpers

def unbroadcast(g: np.ndarray, shape: Shape) -> np.ndarray:
    """Sum `g` (the gradient of a broadcast result) back down to an operand of `shape`."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape)


def same_shape(name: str, *shapes: Shape) -> Shape:
    """Shape rule of ops whose operands must agree exactly; returns the shared shape."""
    first = tuple(shapes[0])
    for s in shapes[1:]:
        if tuple(s) != first:
            raise ValueError(f"{name}: shapes differ: {list(first)} vs {list(s)}")
    return first


def broadcast_shape(name: str, a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting, with a message that names the primitive and both shapes; in Python
    integers, so that sizes whose product passes 2^63 (which NumPy refuses) reach the memory
    check, which reports them."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError(f"{name}: shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def check_axes(name: str, ndim: int, axes: tuple[int, ...]) -> tuple[int, ...]:
    """Validate concrete, non-negative, distinct reduction axes of an ndim-array."""
    axes = tuple(int(a) for a in axes)
    if any(a < 0 or a >= ndim for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{name}: axes {list(axes)} are not distinct axes of a rank-{ndim} array")
    return axes


# ---------------------------------------------------------------------------------------------
# Kink predicates (used by the gradient-check sampler; tol is 1e-3 there)

def near_zero(inputs: tuple, params: dict, tol: float) -> bool:
    """The first operand has an entry within tol of 0 (relu, abs)."""
    return bool(np.any(np.abs(inputs[0]) < tol))


def near_tie(inputs: tuple, params: dict, tol: float) -> bool:
    """The two operands are within tol of each other somewhere (maximum, minimum)."""
    return bool(np.any(np.abs(np.subtract(inputs[0], inputs[1])) < tol))


def near_group_tie(inputs: tuple, params: dict, tol: float) -> bool:
    """Some reduced group's two largest entries are within tol (max)."""
    x = np.asarray(inputs[0])
    axes = tuple(params.get("axes", ()))
    keep = [a for a in range(x.ndim) if a not in axes]
    size = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if size < 2:
        return False
    groups = np.sort(np.transpose(x, keep + list(axes)).reshape(-1, size), axis=1)
    return bool(np.any(groups[:, -1] - groups[:, -2] < tol))


# Importing the families fills PRIMITIVES (they use the helpers above).
from . import (  # noqa: E402,F401
    attention,
    conv,
    dropout,
    elementwise,
    linalg,
    losses,
    pool,
    reduce,
    sequence,
)
