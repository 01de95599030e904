"""Convolution and pooling on NCHW batches: conv2d (im2col + BLAS) and maxpool2d.

conv2d builds columns with a bias row of ones (kernels/conv.py), so the forward is one batched
matmul [w | b] @ cols and [dW | db] is one batched matmul g @ cols^T summed over the batch; dx
(a matmul and the col2im scatter) is skipped when not wanted, as for the first layer. Both save
a residual for the backward: conv2d its columns (when small, see SAVE_MAX), maxpool2d where each
window's maximum was. Measured on 2 cores in float32: at cnn_digits' size ([32,1,8,8] conv
[16,1,3,3], padding 1) forward 23 us, backward without dx 15 us (a direct Numba convolution
took 160 us forward); AlexNet's features at batch 8, forward 50-55 ms vs PyTorch's 41 ms.
"""

from __future__ import annotations

import numpy as np

from ..kernels import conv as K
from . import register

# ---------------------------------------------------------------------------------------------
# conv2d(x, w, b; stride, padding): x [B, C, H, W], w [C2, C, K, K], b [C2] -> [B, C2, Ho, Wo]


def _out_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


def conv2d_shape(x: tuple, w: tuple, b: tuple, *, stride: int, padding: int) -> tuple:
    if len(x) != 4 or len(w) != 4 or len(b) != 1:
        raise ValueError(f"conv2d: expects x [B, C, H, W], w [C2, C, K, K] and b [C2], got "
                         f"{list(x)}, {list(w)} and {list(b)}")
    if w[2] != w[3]:
        raise ValueError(f"conv2d: the kernel must be square, but w {list(w)} is "
                         f"{w[2]} x {w[3]}")
    if x[1] != w[1]:
        raise ValueError(f"conv2d: x {list(x)} has {x[1]} channels but w {list(w)} expects "
                         f"{w[1]}")
    if b[0] != w[0]:
        raise ValueError(f"conv2d: bias has {b[0]} entries but w {list(w)} has {w[0]} output "
                         f"channels")
    if stride < 1 or padding < 0:
        raise ValueError(f"conv2d: needs stride >= 1 and padding >= 0, got stride {stride}, "
                         f"padding {padding}")
    ho, wo = (_out_size(n, w[2], stride, padding) for n in x[2:])
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: a {w[2]} x {w[3]} kernel with padding {padding} does not fit "
                         f"in a {x[2]} x {x[3]} input (output would be {ho} x {wo})")
    return (x[0], w[0], ho, wo)


# Columns of at most SAVE_MAX elements are built for the whole batch and saved for the backward
# (at cnn_digits' size that spares the backward a 12 us im2col). Larger ones go one image at a
# time through one reused buffer, cache-resident and already paged in (AlexNet's forward at
# batch 8: 69 ms with whole-batch columns, 50-55 ms so), and the backward rebuilds them.
SAVE_MAX = 1 << 20


def columns(x, k: int, stride: int, padding: int, out=None) -> np.ndarray:
    """im2col of x [B, C, H, W] into out (or a new array) [B, C*K*K + 1, Ho*Wo]."""
    nb, c, h, w = x.shape
    p = _out_size(h, k, stride, padding) * _out_size(w, k, stride, padding)
    if out is None:
        out = np.empty((nb, c * k * k + 1, p), dtype=x.dtype)
    K.im2col(x, out, k, stride, padding)
    return out


def conv2d_forward(x, w, b, *, stride: int, padding: int):
    nb, c2, k = x.shape[0], w.shape[0], w.shape[2]
    ho, wo = (_out_size(n, k, stride, padding) for n in x.shape[2:])
    wb = np.concatenate((w.reshape(c2, -1), b.reshape(c2, 1)), axis=1)
    if nb * wb.shape[1] * ho * wo <= SAVE_MAX:
        cols = columns(x, k, stride, padding)
        return np.matmul(wb, cols).reshape(nb, c2, ho, wo), cols
    out = np.empty((nb, c2, ho * wo), dtype=x.dtype)
    buf = np.empty((1, wb.shape[1], ho * wo), dtype=x.dtype)
    for i in range(nb):
        np.matmul(wb, columns(x[i:i + 1], k, stride, padding, buf)[0], out=out[i])
    return out.reshape(nb, c2, ho, wo), None


def conv2d_backward(g, out, inputs, wants, *, saved, stride, padding):
    """[dW | db] = sum over images of g @ cols^T; dx = col2im(W^T g). Without saved columns,
    one image at a time, rebuilding its columns into one buffer."""
    x, w, _ = inputs
    nb, c2, ho, wo = g.shape
    k = w.shape[2]
    g3 = g.reshape(nb, c2, ho * wo)
    rows = x.shape[1] * k * k + 1
    dwb = np.zeros((c2, rows), dtype=g.dtype) if wants[1] or wants[2] else None
    dx = np.empty(x.shape, dtype=x.dtype) if wants[0] else None
    step = nb if saved is not None else 1
    buf = np.empty((1, rows, ho * wo), dtype=x.dtype) if saved is None and dwb is not None \
        else None
    for i in range(0, nb, step):
        gi = g3[i:i + step]
        if dwb is not None:
            cols = saved if saved is not None else columns(x[i:i + 1], k, stride, padding, buf)
            dwb += np.matmul(gi, cols.transpose(0, 2, 1)).sum(axis=0)
        if dx is not None:
            K.col2im(np.matmul(w.reshape(c2, -1).T, gi), dx[i:i + step], k, stride, padding)
    dw = np.ascontiguousarray(dwb[:, :-1]).reshape(w.shape) if wants[1] else None
    db = dwb[:, -1].copy() if wants[2] else None
    return dx, dw, db


register("conv2d", shape=conv2d_shape, forward=conv2d_forward, backward=conv2d_backward,
         smooth=True, saves=True)


# ---------------------------------------------------------------------------------------------
# maxpool2d(x; size, stride): x [B, C, H, W] -> [B, C, Ho, Wo], windows may overlap


def maxpool2d_shape(x: tuple, *, size: int, stride: int) -> tuple:
    if len(x) != 4:
        raise ValueError(f"maxpool2d: expects x [B, C, H, W], got {list(x)}")
    if size < 1 or stride < 1:
        raise ValueError(f"maxpool2d: needs size >= 1 and stride >= 1, got size {size}, "
                         f"stride {stride}")
    ho, wo = ((n - size) // stride + 1 for n in x[2:])
    if ho < 1 or wo < 1:
        raise ValueError(f"maxpool2d: a {size} x {size} window does not fit in a "
                         f"{x[2]} x {x[3]} input")
    return (x[0], x[1], ho, wo)


def maxpool2d_forward(x, *, size: int, stride: int):
    ho, wo = ((n - size) // stride + 1 for n in x.shape[2:])
    out = np.empty(x.shape[:2] + (ho, wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=np.int32)
    # np.max is SIMD and propagates NaN: the cheap way to tell the kernel to look for one.
    K.maxpool(x, out, idx, size, stride, bool(np.isnan(np.max(x))))
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
