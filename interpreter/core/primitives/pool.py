"""Pooling on NCHW batches: maxpool2d and avgpool2d (windows of size x size every `stride`
pixels, which may overlap), and the global average of each channel is the `mean` primitive.

maxpool2d saves where each window's maximum was (a Numba kernel, kernels/conv.py); avgpool2d
is size * size strided slices added up, in NumPy, and its backward spreads each window's
gradient evenly over it.
"""

from __future__ import annotations

import numpy as np

from ..kernels import conv as K
from . import register


def _pool_shape(name: str, x: tuple, size: int, stride: int) -> tuple:
    if len(x) != 4:
        raise ValueError(f"{name}: expects x [B, C, H, W], got {list(x)}")
    if size < 1 or stride < 1:
        raise ValueError(f"{name}: needs size >= 1 and stride >= 1, got size {size}, "
                         f"stride {stride}")
    ho, wo = ((n - size) // stride + 1 for n in x[2:])
    if ho < 1 or wo < 1:
        raise ValueError(f"{name}: a {size} x {size} window does not fit in a "
                         f"{x[2]} x {x[3]} input")
    return (x[0], x[1], ho, wo)


# ---------------------------------------------------------------------------------------------
# maxpool2d(x; size, stride): x [B, C, H, W] -> [B, C, Ho, Wo], windows may overlap


def maxpool2d_shape(x: tuple, *, size: int, stride: int) -> tuple:
    return _pool_shape("maxpool2d", x, size, stride)


def maxpool2d_forward(x, *, size: int, stride: int):
    ho, wo = ((n - size) // stride + 1 for n in x.shape[2:])
    out = np.empty(x.shape[:2] + (ho, wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=np.int32)
    # np.max is SIMD and propagates NaN: the cheap way to tell the kernel to look for one.
    K.maxpool(x, out, idx, size, stride, bool(x.size and np.isnan(np.max(x))))
    return out, idx


def maxpool2d_backward(g, out, inputs, wants, *, saved, size, stride):
    """The saved argmax says where each window's gradient goes (ties: the first maximum)."""
    if not wants[0]:
        return (None,)
    dx = np.empty(inputs[0].shape, dtype=g.dtype)
    K.maxpool_grad(g, saved, dx)
    return (dx,)


def near_window_tie(inputs: tuple, params: dict, tol: float) -> bool:
    """Some pooling window's two largest entries are within tol (maxpool2d)."""
    size, stride = params["size"], params["stride"]
    if size < 2:
        return False
    win = np.lib.stride_tricks.sliding_window_view(inputs[0], (size, size), axis=(2, 3))
    win = np.sort(win[:, :, ::stride, ::stride].reshape(-1, size * size), axis=1)
    return bool(np.any(win[:, -1] - win[:, -2] < tol))


register("maxpool2d", shape=maxpool2d_shape, forward=maxpool2d_forward,
         backward=maxpool2d_backward, smooth=False, kinks=(near_window_tie,), saves=True)


# ---------------------------------------------------------------------------------------------
# avgpool2d(x; size, stride): x [B, C, H, W] -> [B, C, Ho, Wo], the mean of each window


def avgpool2d_shape(x: tuple, *, size: int, stride: int) -> tuple:
    return _pool_shape("avgpool2d", x, size, stride)


def _windows(x, size: int, stride: int, ho: int, wo: int):
    """The size * size strided views whose entry [.., oh, ow] is one pixel of window (oh, ow)."""
    return [x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(size) for j in range(size)]


def avgpool2d_forward(x, *, size: int, stride: int):
    ho, wo = ((n - size) // stride + 1 for n in x.shape[2:])
    out = np.zeros(x.shape[:2] + (ho, wo), dtype=x.dtype)
    for view in _windows(x, size, stride, ho, wo):
        out += view
    out *= x.dtype.type(1.0 / (size * size))
    return out


def avgpool2d_backward(g, out, inputs, wants, *, size: int, stride: int):
    if not wants[0]:
        return (None,)
    dx = np.zeros(inputs[0].shape, dtype=g.dtype)
    share = g * g.dtype.type(1.0 / (size * size))
    for view in _windows(dx, size, stride, g.shape[2], g.shape[3]):
        view += share
    return (dx,)


register("avgpool2d", shape=avgpool2d_shape, forward=avgpool2d_forward,
         backward=avgpool2d_backward, smooth=True)
