"""Linear-algebra and layout primitives: linear, matmul, transpose, reshape, take, fill, stack,
concat.

Matrix products go to BLAS through NumPy. `linear` is the hot path of every FeedForward: its
batched input is folded to one 2-D matrix (a view when contiguous) so each product is a single
GEMM, and `W.T` is a transposed view that BLAS consumes without a copy. linear and matmul
always return a new array, never a view of an input (the executor's `run` relies on it:
execute.FRESH), and linear's backward takes `into=`, the arrays to write dW and db into (the
executor's views of the flat gradient buffer).
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import linear as K
from . import broadcast_shape, near_zero, register, unbroadcast

# ---------------------------------------------------------------------------------------------
# linear(x, W) or linear(x, W, b): x [..., n], W [m, n], b [m] -> [..., m] = x @ W.T (+ b),
# then relu(...) when `relu`. The bias and relu forms are what fuse.py makes of `W x + b` and
# `relu(W x + b)`: the add and the relu happen in place on the product, db is one sum over the
# folded rows instead of a broadcast add and its unbroadcast, and the relu's backward masks g by
# the output (out > 0 exactly where the product was), so no second array is kept for it.


def linear_shape(x: tuple, w: tuple, *b: tuple, relu: bool = False) -> tuple:
    if len(x) < 1 or len(w) != 2:
        raise ValueError(f"linear: expects x [..., n] and W [m, n], got {list(x)} and {list(w)}")
    if x[-1] != w[1]:
        raise ValueError(f"linear: inner dimensions differ: x {list(x)} @ W.T for W {list(w)} "
                         f"({x[-1]} != {w[1]})")
    if b and tuple(b[0]) != (w[0],) or len(b) > 1:
        raise ValueError(f"linear: the bias must be [{w[0]}] for W {list(w)}, got "
                         f"{[list(s) for s in b]}")
    return tuple(x[:-1]) + (w[0],)


# Products of at most SMALL_ROWS rows and SMALL multiply-adds run as one kernel
# (kernels/linear.py: the call into BLAS costs more than the arithmetic): batch-1 inference
# of a small network. From 4 rows on BLAS is as fast, and training batches keep BLAS's sums.
SMALL, SMALL_ROWS = 16384, 2


# A few rows (2 to FEW_ROWS) through a large W (at least LARGE_W entries: streaming W from
# memory is the cost) run as (W @ x.T).T: OpenBLAS splits W's rows between its threads then,
# and the product is 1.4-2x faster than x @ W.T (AlexNet's dense layers at batch 8: 27 ms
# -> 19 ms). Training's larger batches and small layers keep x @ W.T and its sums.
FEW_ROWS, LARGE_W = 32, 1 << 20


def _product(x2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x2 @ W.T, a new C-contiguous array."""
    if 2 <= len(x2) <= FEW_ROWS and w.size >= LARGE_W:
        return np.ascontiguousarray((w @ x2.T).T)
    return x2 @ w.T


def linear_forward(x: np.ndarray, w: np.ndarray, *b: np.ndarray, relu: bool = False):
    x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    if len(x2) <= SMALL_ROWS and len(x2) * w.size <= SMALL and x.dtype is w.dtype:
        out = np.empty((len(x2), w.shape[0]), x.dtype)
        K.small_linear(x2, w, b[0] if b else w[0, :0], relu, out)
    else:
        out = _product(x2, w)
        if b and out.size:
            K.bias_act(out, b[0], relu)
        elif relu:
            np.maximum(out, 0, out=out)
    return out if x.ndim == 2 else out.reshape(x.shape[:-1] + (w.shape[0],))


def linear_backward(g, out, inputs, wants, relu=False, into=None):
    """`into`: for each input None or an array to write its gradient into (the executor's
    view of the flat gradient buffer), so dW is the GEMM's own output, never copied."""
    x, w = inputs[:2]
    dest = into or (None,) * len(inputs)
    g2 = np.ascontiguousarray(g).reshape(-1, w.shape[0])
    db = None
    if relu:
        db = dest[2] if len(inputs) == 3 and dest[2] is not None else np.empty(w.shape[0],
                                                                               g2.dtype)
        g2 = K.relu_vjp_sums(g2, np.ascontiguousarray(out).reshape(g2.shape), db)
    # dx = g @ W is skipped when not wanted (the first layer's input): one GEMM saved.
    dx = (g2 @ w).reshape(x.shape) if wants[0] else None
    # dW = sum over the leading axes of g^T x, done as one GEMM over the folded axes.
    dw = np.matmul(g2.T, x.reshape(-1, x.shape[-1]), out=dest[1]) if wants[1] else None
    if len(inputs) == 2:
        return dx, dw
    if wants[2] and db is None:
        db = g2.sum(axis=0, out=dest[2])
    return dx, dw, (db if wants[2] else None)


def near_relu_kink(inputs: tuple, params: dict, tol: float) -> bool:
    """With relu: some x @ W.T (+ b) within tol of 0."""
    return bool(params.get("relu")) and near_zero((linear_forward(*inputs),), params, tol)


register("linear", shape=linear_shape, forward=linear_forward, backward=linear_backward,
         smooth=True, kinks=(near_relu_kink,))


# ---------------------------------------------------------------------------------------------
# matmul(a, b): np.matmul semantics, including 1-D operands and broadcast batch axes


def matmul_shape(a: tuple, b: tuple) -> tuple:
    a, b = tuple(a), tuple(b)
    if not a or not b:
        raise ValueError(f"matmul: operands must have rank >= 1, got {list(a)} and {list(b)}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: inner dimensions differ: {list(a)} @ {list(b)} "
                         f"({a2[-1]} != {b2[-2]})")
    batch = broadcast_shape("matmul", a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) > 1 else out[:-1]
    return out


def matmul_backward(g, out, inputs, wants):
    a, b = inputs
    # Promote 1-D operands to matrices as np.matmul does, and put the dropped axes back in g.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2 if b.ndim > 1 else 0)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    da = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape) if wants[0] else None
    db = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape) if wants[1] else None
    return da, db


def matmul_forward(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.matmul(a, b))  # vector @ vector gives a NumPy scalar: make it 0-d


register("matmul", shape=matmul_shape, forward=matmul_forward, backward=matmul_backward,
         smooth=True)


# ---------------------------------------------------------------------------------------------
# transpose(x, *, axes) and reshape(x, *, shape)


def transpose_shape(x: tuple, *, axes: tuple) -> tuple:
    if sorted(axes) != list(range(len(x))):
        raise ValueError(f"transpose: axes {list(axes)} are not a permutation of a rank-{len(x)} "
                         f"array's axes")
    return tuple(x[a] for a in axes)


def transpose_forward(x: np.ndarray, *, axes: tuple) -> np.ndarray:
    return np.transpose(x, axes)


def transpose_backward(g, out, inputs, wants, *, axes):
    return (np.transpose(g, np.argsort(axes)) if wants[0] else None,)


register("transpose", shape=transpose_shape, forward=transpose_forward,
         backward=transpose_backward, smooth=True)


def reshape_shape(x: tuple, *, shape: tuple) -> tuple:
    size = math.prod(x)  # Python integers: a size past 2^63 is counted, never wrapped
    shape = tuple(int(n) for n in shape)
    free = [i for i, n in enumerate(shape) if n == -1]
    known = math.prod(n for n in shape if n != -1)
    if len(free) > 1 or any(n < -1 for n in shape):
        raise ValueError(f"reshape: bad target shape {list(shape)}")
    if free:
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape {list(x)} into {list(shape)}")
        shape = shape[:free[0]] + (size // known,) + shape[free[0] + 1:]
    elif known != size:
        raise ValueError(f"reshape: cannot reshape {list(x)} ({size} elements) into "
                         f"{list(shape)} ({known} elements)")
    return shape


def reshape_forward(x: np.ndarray, *, shape: tuple) -> np.ndarray:
    return x.reshape(shape)


def reshape_backward(g, out, inputs, wants, *, shape):
    return (g.reshape(inputs[0].shape) if wants[0] else None,)


register("reshape", shape=reshape_shape, forward=reshape_forward, backward=reshape_backward,
         smooth=True)


# ---------------------------------------------------------------------------------------------
# take(x, *, axis, index): one slice of an axis (the first or last element of a sequence)


def take_shape(x: tuple, *, axis: int, index: int) -> tuple:
    if not 0 <= axis < len(x) or not 0 <= index < x[axis]:
        raise ValueError(f"take: no element {index} on axis {axis} of {list(x)}")
    return tuple(x[:axis]) + tuple(x[axis + 1:])


def take_forward(x: np.ndarray, *, axis: int, index: int) -> np.ndarray:
    return np.take(x, index, axis=axis)


def take_backward(g, out, inputs, wants, *, axis, index):
    if not wants[0]:
        return (None,)
    dx = np.zeros(inputs[0].shape, dtype=g.dtype)
    np.moveaxis(dx, axis, 0)[index] = g
    return (dx,)


register("take", shape=take_shape, forward=take_forward, backward=take_backward, smooth=True)


# ---------------------------------------------------------------------------------------------
# fill(x, *, shape): a scalar spread over an array of `shape` (a recurrent cell's zero state)


def fill_shape(x: tuple, *, shape: tuple) -> tuple:
    if x != ():
        raise ValueError(f"fill: expects a scalar, got {list(x)}")
    return tuple(shape)


def fill_forward(x: np.ndarray, *, shape: tuple) -> np.ndarray:
    return np.full(shape, x, dtype=np.asarray(x).dtype)


def fill_backward(g, out, inputs, wants, *, shape):
    return (np.asarray(g.sum(), dtype=g.dtype) if wants[0] else None,)


register("fill", shape=fill_shape, forward=fill_forward, backward=fill_backward, smooth=True)


# ---------------------------------------------------------------------------------------------
# stack(*xs, *, axis): same-shape arrays along a new axis (the steps of a scan, in order);
# concat(*xs, *, axis): arrays joined along an existing axis (the gates of an LSTM)


def stack_shape(*xs: tuple, axis: int) -> tuple:
    if not xs or any(x != xs[0] for x in xs) or not 0 <= axis <= len(xs[0]):
        raise ValueError(f"stack: expects arrays of one shape, got {[list(x) for x in xs]}")
    return tuple(xs[0][:axis]) + (len(xs),) + tuple(xs[0][axis:])


def stack_forward(*xs: np.ndarray, axis: int) -> np.ndarray:
    return np.stack(xs, axis=axis)


def stack_backward(g, out, inputs, wants, *, axis):
    return tuple(np.take(g, i, axis=axis) if w else None for i, w in enumerate(wants))


register("stack", shape=stack_shape, forward=stack_forward, backward=stack_backward, smooth=True)


def concat_shape(*xs: tuple, axis: int) -> tuple:
    rest = {x[:axis] + x[axis + 1:] for x in xs}
    if not xs or len(rest) != 1 or not all(0 <= axis < len(x) for x in xs):
        raise ValueError(f"concat: expects arrays that differ only on axis {axis}, got "
                         f"{[list(x) for x in xs]}")
    x = xs[0]
    return tuple(x[:axis]) + (sum(x[axis] for x in xs),) + tuple(x[axis + 1:])


def concat_forward(*xs: np.ndarray, axis: int) -> np.ndarray:
    return np.concatenate(xs, axis=axis)


def concat_backward(g, out, inputs, wants, *, axis):
    ends = np.cumsum([x.shape[axis] for x in inputs])
    parts = np.split(g, ends[:-1], axis=axis)
    return tuple(p if w else None for p, w in zip(parts, wants, strict=True))


register("concat", shape=concat_shape, forward=concat_forward, backward=concat_backward,
         smooth=True)
