"""Reductions (sum, mean, max over concrete axes) and the softmax family (last axis).

Reduction axes are concrete, non-negative axes of the batched array. Backward rules return
fresh, writable arrays of the input's shape (never read-only broadcast views). The softmax
family runs the stable Numba kernels of `kernels/softmax.py` on the array folded to 2-D.
"""

from __future__ import annotations

import numpy as np

from ..kernels import softmax as K
from . import check_axes, near_group_tie, register

# ---------------------------------------------------------------------------------------------
# sum, mean, max


def _reduce_shape(name: str):
    def shape(x: tuple, *, axes: tuple, keepdims: bool = False) -> tuple:
        axes = check_axes(name, len(x), axes)
        if name == "max" and any(x[a] == 0 for a in axes):
            raise ValueError(f"max: cannot reduce over an empty axis of {list(x)}")
        if keepdims:
            return tuple(1 if i in axes else n for i, n in enumerate(x))
        return tuple(n for i, n in enumerate(x) if i not in axes)
    return shape


def _spread(g: np.ndarray, shape: tuple, axes: tuple, keepdims: bool) -> np.ndarray:
    """Copy g (the reduced gradient) back over the reduced axes, as a fresh array."""
    if not keepdims:
        g = np.expand_dims(g, axes)
    out = np.empty(shape, dtype=g.dtype)
    out[...] = g
    return out


def sum_forward(x: np.ndarray, *, axes: tuple, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.sum(x, axis=tuple(axes), keepdims=keepdims))


def sum_backward(g, out, inputs, wants, *, axes, keepdims=False):
    return (_spread(g, inputs[0].shape, tuple(axes), keepdims) if wants[0] else None,)


def _count(shape: tuple, axes: tuple) -> int:
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def mean_forward(x: np.ndarray, *, axes: tuple, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.mean(x, axis=tuple(axes), keepdims=keepdims))


def mean_backward(g, out, inputs, wants, *, axes, keepdims=False):
    if not wants[0]:
        return (None,)
    x = inputs[0]
    return (_spread(g * (1.0 / max(_count(x.shape, axes), 1)), x.shape, tuple(axes), keepdims),)


def max_forward(x: np.ndarray, *, axes: tuple, keepdims: bool = False) -> np.ndarray:
    return np.asarray(np.max(x, axis=tuple(axes), keepdims=keepdims))


def max_backward(g, out, inputs, wants, *, axes, keepdims=False):
    """The whole gradient of each group goes to its first maximal entry (argmax order)."""
    if not wants[0]:
        return (None,)
    x = inputs[0]
    axes = tuple(axes)
    perm = [a for a in range(x.ndim) if a not in axes] + list(axes)
    groups = np.transpose(x, perm).reshape(-1, _count(x.shape, axes))
    first = np.argmax(groups, axis=1)
    dx = np.zeros(groups.shape, dtype=g.dtype)
    dx[np.arange(groups.shape[0]), first] = g.reshape(-1)
    dx = dx.reshape([x.shape[a] for a in perm]).transpose(np.argsort(perm))
    return (np.ascontiguousarray(dx),)


register("sum", shape=_reduce_shape("sum"), forward=sum_forward, backward=sum_backward,
         smooth=True)
register("mean", shape=_reduce_shape("mean"), forward=mean_forward, backward=mean_backward,
         smooth=True)
register("max", shape=_reduce_shape("max"), forward=max_forward, backward=max_backward,
         smooth=False, kinks=(near_group_tie,))


# ---------------------------------------------------------------------------------------------
# softmax, log_softmax, logsumexp along the last axis


def _rows(x: np.ndarray) -> np.ndarray:
    """x folded to C-contiguous [N, K] (a view when x is already contiguous)."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _last_axis_shape(name: str, drop: bool):
    def shape(x: tuple) -> tuple:
        if len(x) < 1:
            raise ValueError(f"{name}: needs an array of rank >= 1, got a scalar")
        if x[-1] == 0:
            raise ValueError(f"{name}: the last axis of {list(x)} is empty")
        return tuple(x[:-1]) if drop else tuple(x)
    return shape


def softmax_forward(x: np.ndarray) -> np.ndarray:
    return K.softmax_rows(_rows(x)).reshape(x.shape)


def softmax_backward(g, out, inputs, wants):
    return (K.softmax_rows_vjp(_rows(g), _rows(out)).reshape(out.shape) if wants[0] else None,)


def log_softmax_forward(x: np.ndarray) -> np.ndarray:
    return K.log_softmax_rows(_rows(x)).reshape(x.shape)


def log_softmax_backward(g, out, inputs, wants):
    return (K.log_softmax_rows_vjp(_rows(g), _rows(out)).reshape(out.shape) if wants[0] else None,)


def logsumexp_forward(x: np.ndarray) -> np.ndarray:
    return K.logsumexp_rows(_rows(x)).reshape(x.shape[:-1])


def logsumexp_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    x = inputs[0]
    g1 = np.ascontiguousarray(g).reshape(-1)
    return (K.logsumexp_rows_vjp(g1, _rows(x)).reshape(x.shape),)


register("softmax", shape=_last_axis_shape("softmax", False), forward=softmax_forward,
         backward=softmax_backward, smooth=True)
register("log_softmax", shape=_last_axis_shape("log_softmax", False), forward=log_softmax_forward,
         backward=log_softmax_backward, smooth=True)
register("logsumexp", shape=_last_axis_shape("logsumexp", True), forward=logsumexp_forward,
         backward=logsumexp_backward, smooth=True)
