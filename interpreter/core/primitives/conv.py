"""Convolutions: conv2d on NCHW batches (im2col + BLAS) and conv1d along a sequence.

conv2d builds columns with a bias row of ones (kernels/conv.py), so the forward is one batched
matmul [w | b] @ cols and [dW | db] is one batched matmul g @ cols^T summed over the batch; dx
(a matmul and the col2im scatter) is skipped when not wanted, as for the first layer. It saves
its columns for the backward when they are small (see SAVE_MAX). Measured on 2 cores in
float32: at cnn_digits' size ([32,1,8,8] conv [16,1,3,3], padding 1) forward 23 us, backward
without dx 15 us (a direct Numba convolution took 160 us forward); AlexNet's features at batch
8, forward 50-55 ms vs PyTorch's 41 ms.

Filters may be rectangular (KH x KW, each axis with its own padding) and grouped: with
`groups` g, the C input and C2 output channels are cut into g groups and each output channel
sees only the C / g inputs of its group (depthwise when g = C). A grouped product is one
batched matmul over the groups, [g, C2/g, C/g*KH*KW] @ [B, g, C/g*KH*KW, Ho*Wo].

conv1d(x, w, b) runs filters w [E, D, K] along a sequence x [B, N, D] (PyTorch's Conv1d layout
with the sequence first, as dp stores it): K matmuls of the shifted sequence with one tap each.
"""

from __future__ import annotations

import numpy as np

from ..kernels import conv as K
from . import register

# ---------------------------------------------------------------------------------------------
# conv2d(x, w, b; stride, padding, groups): x [B, C, H, W], w [C2, C / groups, KH, KW], b [C2]
# -> [B, C2, Ho, Wo]; padding is one number for both axes or a pair (height, width).


def _out_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


def pair(padding) -> tuple[int, int]:
    """(height, width) padding from one number or a pair."""
    if isinstance(padding, (tuple, list)):
        return int(padding[0]), int(padding[1])
    return int(padding), int(padding)


def conv2d_shape(x: tuple, w: tuple, b: tuple, *, stride: int, padding, groups: int = 1
                 ) -> tuple:
    if len(x) != 4 or len(w) != 4 or len(b) != 1:
        raise ValueError(f"conv2d: expects x [B, C, H, W], w [C2, C, KH, KW] and b [C2], got "
                         f"{list(x)}, {list(w)} and {list(b)}")
    ph, pw = pair(padding)
    if stride < 1 or min(ph, pw) < 0 or groups < 1:
        raise ValueError(f"conv2d: needs stride >= 1, padding >= 0 and groups >= 1, got "
                         f"stride {stride}, padding {padding}, groups {groups}")
    if x[1] != w[1] * groups:
        per = f" per group, {groups} groups" if groups > 1 else ""
        raise ValueError(f"conv2d: x {list(x)} has {x[1]} channels but w {list(w)} expects "
                         f"{w[1]}{per}")
    if w[0] % groups:
        raise ValueError(f"conv2d: {groups} groups do not divide the {w[0]} output channels")
    if b[0] != w[0]:
        raise ValueError(f"conv2d: bias has {b[0]} entries but w {list(w)} has {w[0]} output "
                         f"channels")
    ho, wo = _out_size(x[2], w[2], stride, ph), _out_size(x[3], w[3], stride, pw)
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: a {w[2]} x {w[3]} kernel with padding {padding} does not fit "
                         f"in a {x[2]} x {x[3]} input (output would be {ho} x {wo})")
    return (x[0], w[0], ho, wo)


# Columns of at most SAVE_MAX elements are built for the whole batch and saved for the backward
# (at cnn_digits' size that spares the backward a 12 us im2col). Larger ones go one image at a
# time through one reused buffer, cache-resident and already paged in (AlexNet's forward at
# batch 8: 69 ms with whole-batch columns, 50-55 ms so), and the backward rebuilds them.
SAVE_MAX = 1 << 20


def columns(x, kh: int, kw: int, stride: int, ph: int, pw: int, out=None) -> np.ndarray:
    """im2col of x [B, C, H, W] into out (or a new array) [B, C*KH*KW + 1, Ho*Wo]."""
    nb, c, h, w = x.shape
    p = _out_size(h, kh, stride, ph) * _out_size(w, kw, stride, pw)
    if out is None:
        out = np.empty((nb, c * kh * kw + 1, p), dtype=x.dtype)
    K.im2col(x, out, kh, kw, stride, ph, pw)
    return out


def _product(w, b, wb, cols, groups: int, out=None):
    """[n, C2, P] = the filters applied to columns [n, C*KH*KW + 1, P]."""
    if groups == 1:
        return np.matmul(wb, cols, out=out)
    n, _, p = cols.shape
    wg = w.reshape(groups, w.shape[0] // groups, -1)
    y = np.matmul(wg, cols[:, :-1].reshape(n, groups, -1, p)).reshape(n, w.shape[0], p)
    y += b[:, None]
    if out is None:
        return y
    out[...] = y
    return out


def conv2d_forward(x, w, b, *, stride: int, padding, groups: int = 1):
    nb, c2, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    ph, pw = pair(padding)
    ho, wo = _out_size(x.shape[2], kh, stride, ph), _out_size(x.shape[3], kw, stride, pw)
    wb = np.concatenate((w.reshape(c2, -1), b.reshape(c2, 1)), axis=1) if groups == 1 else None
    rows = x.shape[1] * kh * kw + 1
    if nb * rows * ho * wo <= SAVE_MAX:
        cols = columns(x, kh, kw, stride, ph, pw)
        return _product(w, b, wb, cols, groups).reshape(nb, c2, ho, wo), cols
    out = np.empty((nb, c2, ho * wo), dtype=x.dtype)
    buf = np.empty((1, rows, ho * wo), dtype=x.dtype)
    for i in range(nb):
        cols = columns(x[i:i + 1], kh, kw, stride, ph, pw, buf)
        _product(w, b, wb, cols, groups, out=out[i:i + 1])
    return out.reshape(nb, c2, ho, wo), None


def conv2d_backward(g, out, inputs, wants, *, saved, stride, padding, groups: int = 1):
    """[dW | db] = sum over images of g @ cols^T; dx = col2im(W^T g), per group. Without
    saved columns, one image at a time, rebuilding its columns into one buffer."""
    x, w, _ = inputs
    nb, c2, ho, wo = g.shape
    kh, kw = w.shape[2], w.shape[3]
    ph, pw = pair(padding)
    g3 = g.reshape(nb, c2, ho * wo)
    rows = x.shape[1] * kh * kw + 1
    dwb = np.zeros((c2, w[0].size + 1), dtype=g.dtype) if wants[1] or wants[2] else None
    dx = np.empty(x.shape, dtype=x.dtype) if wants[0] else None
    step = nb if saved is not None else 1
    buf = np.empty((1, rows, ho * wo), dtype=x.dtype) if saved is None and dwb is not None \
        else None
    cg, c2g = x.shape[1] // groups, c2 // groups
    wg = w.reshape(groups, c2g, -1)
    for i in range(0, nb, step):
        gi = g3[i:i + step]
        n = gi.shape[0]
        if dwb is not None:
            cols = saved if saved is not None else columns(x[i:i + 1], kh, kw, stride, ph, pw,
                                                           buf)
            if groups == 1:
                dwb += np.matmul(gi, cols.transpose(0, 2, 1)).sum(axis=0)
            else:
                c4 = cols[:, :-1].reshape(n, groups, cg * kh * kw, -1)
                dw = np.matmul(gi.reshape(n, groups, c2g, -1), c4.transpose(0, 1, 3, 2))
                dwb[:, :-1] += dw.sum(axis=0).reshape(c2, -1)
                dwb[:, -1] += gi.sum(axis=(0, 2))
        if dx is not None:
            if groups == 1:
                dcols = np.matmul(w.reshape(c2, -1).T, gi)
            else:
                dcols = np.matmul(wg.transpose(0, 2, 1), gi.reshape(n, groups, c2g, -1))
                dcols = dcols.reshape(n, x.shape[1] * kh * kw, -1)
            K.col2im(dcols, dx[i:i + step], kh, kw, stride, ph, pw)
    dw = np.ascontiguousarray(dwb[:, :-1]).reshape(w.shape) if wants[1] else None
    db = dwb[:, -1].copy() if wants[2] else None
    return dx, dw, db


register("conv2d", shape=conv2d_shape, forward=conv2d_forward, backward=conv2d_backward,
         smooth=True, saves=True)


# ---------------------------------------------------------------------------------------------
# conv1d(x, w, b; stride, padding): x [B, N, D], w [E, D, K], b [E] -> [B, No, E]


def conv1d_shape(x: tuple, w: tuple, b: tuple, *, stride: int, padding: int) -> tuple:
    if len(x) != 3 or len(w) != 3 or len(b) != 1:
        raise ValueError(f"conv1d: expects x [B, N, D], w [E, D, K] and b [E], got "
                         f"{list(x)}, {list(w)} and {list(b)}")
    if x[2] != w[1]:
        raise ValueError(f"conv1d: x {list(x)} has vectors of {x[2]} but w {list(w)} expects "
                         f"{w[1]}")
    if b[0] != w[0]:
        raise ValueError(f"conv1d: bias has {b[0]} entries but w {list(w)} makes {w[0]}")
    if stride < 1 or padding < 0:
        raise ValueError(f"conv1d: needs stride >= 1 and padding >= 0, got stride {stride}, "
                         f"padding {padding}")
    n = _out_size(x[1], w[2], stride, padding)
    if n < 1:
        raise ValueError(f"conv1d: a kernel of {w[2]} with padding {padding} does not fit in a "
                         f"sequence of {x[1]}")
    return (x[0], n, w[0])


def _taps(xp, k: int, stride: int, n: int):
    """The K shifted views of the padded sequence: tap j holds xp[:, o*stride + j] for each
    output position o."""
    return [xp[:, j:j + stride * (n - 1) + 1:stride] for j in range(k)]


def _padded(x, padding: int):
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (padding, padding), (0, 0)))


def conv1d_forward(x, w, b, *, stride: int, padding: int):
    n = _out_size(x.shape[1], w.shape[2], stride, padding)
    out = np.empty((x.shape[0], n, w.shape[0]), dtype=x.dtype)
    out[...] = b
    for j, tap in enumerate(_taps(_padded(x, padding), w.shape[2], stride, n)):
        out += np.matmul(tap, w[:, :, j].T)
    return out


def conv1d_backward(g, out, inputs, wants, *, stride: int, padding: int):
    x, w, _ = inputs
    k, n = w.shape[2], g.shape[1]
    dx = dw = db = None
    if wants[0]:
        dxp = np.zeros((x.shape[0], x.shape[1] + 2 * padding, x.shape[2]), dtype=x.dtype)
        for j, tap in enumerate(_taps(dxp, k, stride, n)):
            tap += np.matmul(g, w[:, :, j])
        dx = dxp[:, padding:padding + x.shape[1]]
    if wants[1]:
        g2 = g.reshape(-1, g.shape[2]).T
        dw = np.empty(w.shape, dtype=g.dtype)
        for j, tap in enumerate(_taps(_padded(x, padding), k, stride, n)):
            dw[:, :, j] = g2 @ tap.reshape(-1, x.shape[2])
    if wants[2]:
        db = g.sum(axis=(0, 1))
    return dx, dw, db


register("conv1d", shape=conv1d_shape, forward=conv1d_forward, backward=conv1d_backward,
         smooth=True)
