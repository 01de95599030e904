"""Reductions (sum, mean, max over concrete axes) and the softmax family (last axis).

Reduction axes are concrete, non-negative axes of the batched array. Backward rules return
fresh, writable arrays of the input's shape (never read-only broadcast views). The softmax
family runs the stable Numba kernels of `kernels/softmax.py` on small arrays (folded to 2-D)
and an equally stable NumPy chain on large ones (why: see the banner below).
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
# softmax, log_softmax, logsumexp along the last axis: two paths, one contract
#
# The fused Numba kernels (kernels/softmax.py: float64 sums, the float32 exp of kernels/vmath.py,
# which LLVM vectorises) are faster than the NumPy chain at every size measured, float32,
# forward / backward: cross_entropy [64, 10] 5 / 6 us against 21 / 24, [2048, 103] (a character
# LM's logits) 272 / 291 us against 373 / 417, [8192, 64] 640 / 669 against 1141 / 1280 (a
# loaded machine). The NumPy chain stays as a second implementation that the tests run too
# (gradcheck.force_path), and takes arrays above KERNEL_MAX_SIZE (2^26 entries, which none of
# dp's workloads nears). Both paths shift rows by their maximum (leaving a row with
# an infinite maximum unshifted), so both are stable; tests run every check on both.

KERNEL_MAX_SIZE = 1 << 26


def use_kernel(x: np.ndarray) -> bool:
    return x.size <= KERNEL_MAX_SIZE


def rows(x: np.ndarray) -> np.ndarray:
    """x folded to C-contiguous [N, K] (a view when x is already contiguous)."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def shifted_rows(x: np.ndarray) -> np.ndarray:
    """x - m row by row (NumPy path), m the row maximum, or 0 where that maximum is infinite.

    In float32, [3e38, -3e38] - 3e38 overflows to -inf, whose exp is the right 0: the overflow
    warning is expected and silenced."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isinf(m), 0, m)
    with np.errstate(over="ignore"):
        return x - m


def exp_shifted_rows(x: np.ndarray) -> np.ndarray:
    z = shifted_rows(x)
    return np.exp(z, out=z)


def _last_axis_shape(name: str, drop: bool):
    def shape(x: tuple) -> tuple:
        if len(x) < 1:
            raise ValueError(f"{name}: needs an array of rank >= 1, got a scalar")
        if x[-1] == 0:
            raise ValueError(f"{name}: the last axis of {list(x)} is empty")
        return tuple(x[:-1]) if drop else tuple(x)
    return shape


def softmax_forward(x: np.ndarray) -> np.ndarray:
    if use_kernel(x):
        return K.softmax_rows(rows(x)).reshape(x.shape)
    e = exp_shifted_rows(x)
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def softmax_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    if use_kernel(out):
        return (K.softmax_rows_vjp(rows(g), rows(out)).reshape(out.shape),)
    dx = g - np.sum(g * out, axis=-1, keepdims=True)
    dx *= out
    return (dx,)


def log_softmax_forward(x: np.ndarray) -> np.ndarray:
    if use_kernel(x):
        return K.log_softmax_rows(rows(x)).reshape(x.shape)
    z = shifted_rows(x)
    z -= np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return z


def log_softmax_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    if use_kernel(out):
        return (K.log_softmax_rows_vjp(rows(g), rows(out)).reshape(out.shape),)
    dx = np.exp(out)
    dx *= -np.sum(g, axis=-1, keepdims=True)
    dx += g
    return (dx,)


def logsumexp_forward(x: np.ndarray) -> np.ndarray:
    if use_kernel(x):
        return K.logsumexp_rows(rows(x)).reshape(x.shape[:-1])
    m = np.max(x, axis=-1)
    m = np.where(np.isinf(m), 0, m)
    with np.errstate(over="ignore"):
        s = np.sum(np.exp(x - m[..., None]), axis=-1)
    return np.asarray(m + np.log(s))


def logsumexp_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    x = inputs[0]
    if use_kernel(x):
        g1 = np.ascontiguousarray(g).reshape(-1)
        return (K.logsumexp_rows_vjp(g1, rows(x)).reshape(x.shape),)
    # The softmax is recomputed from x, not taken as exp(x - out) (see the kernel's note).
    e = exp_shifted_rows(x)
    e *= (g / np.sum(e, axis=-1))[..., None]
    return (e,)


register("softmax", shape=_last_axis_shape("softmax", False), forward=softmax_forward,
         backward=softmax_backward, smooth=True)
register("log_softmax", shape=_last_axis_shape("log_softmax", False), forward=log_softmax_forward,
         backward=log_softmax_backward, smooth=True)
register("logsumexp", shape=_last_axis_shape("logsumexp", True), forward=logsumexp_forward,
         backward=logsumexp_backward, smooth=True)
