"""Convolutions: conv2d on NCHW batches (im2col + BLAS, or Winograd) and conv1d along a sequence.

conv2d builds columns [C*KH*KW + 1, B*Ho*Wo] with a bias row of ones (kernels/conv.py): the
images side by side, so the forward is one matmul [w | b] @ cols for a whole chunk of images
(AlexNet's 13 x 13 layers would give OpenBLAS products only 169 wide, one per image), and
[dW | db] is one matmul g @ cols^T with g laid out the same way; dx (a matmul and the col2im
scatter) is skipped when not wanted, as for the first layer. It saves its columns for the
backward when they are small (see SAVE_MAX). 3 x 3, stride-1 layers with enough channels run
their forward as Winograd F(2x2, 3x3) instead (see WINOGRAD_MIN). With `relu` (fuse.py folds
`relu(conv2d(...))` into it) the relu is applied to each chunk of the output as it is made (or
in Winograd's output transform), and the backward masks g by out > 0.

Filters may be rectangular (KH x KW, each axis with its own padding) and grouped: with
`groups` g, the C input and C2 output channels are cut into g groups and each output channel
sees only the C / g inputs of its group (depthwise when g = C). A grouped product is one
batched matmul over the groups, [g, C2/g, C/g*KH*KW] @ [g, C/g*KH*KW, B*Ho*Wo].

conv1d(x, w, b) runs filters w [E, D, K] along a sequence x [B, N, D] (PyTorch's Conv1d layout
with the sequence first, as dp stores it): K matmuls of the shifted sequence with one tap each.
"""

from __future__ import annotations

import threading

import numpy as np

from ..kernels import conv as K
from ..kernels import elementwise as E
from . import near_zero, register

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


def conv2d_shape(x: tuple, w: tuple, b: tuple, *, stride: int, padding, groups: int = 1,
                 relu: bool = False) -> tuple:
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
# (at cnn_digits' size that spares the backward a 12 us im2col). Larger ones go through one
# reused buffer a chunk of images at a time, and the backward rebuilds them.
SAVE_MAX = 1 << 20
# A chunk holds whole images, about CHUNK_COLS columns (output pixels) or one image when an
# image has more: small images (13 x 13) still give OpenBLAS a wide product, and large ones
# keep their columns small. (AlexNet's 27 x 27 layer on 2 cores: 19.6 ms one image at a time,
# 22.8 ms two.)
CHUNK_COLS = 512


def chunks(nb: int, p: int, cols: int) -> list[tuple[int, int]]:
    """[start, stop) runs of images, even in size, of about `cols` columns of p each."""
    n = -(-nb // max(1, min(nb, -(-cols // p))))
    per = -(-nb // n)
    return [(i, min(i + per, nb)) for i in range(0, nb, per)]


def columns(x, kh: int, kw: int, stride: int, ph: int, pw: int, buf=None) -> np.ndarray:
    """im2col of x [B, C, H, W]: [C*KH*KW + 1, B*Ho*Wo], in the front of the flat buf if
    given (else a new array)."""
    nb, c, h, w = x.shape
    shape = (c * kh * kw + 1, nb * _out_size(h, kh, stride, ph) * _out_size(w, kw, stride, pw))
    if buf is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        out = buf[:shape[0] * shape[1]].reshape(shape)
    K.im2col(np.ascontiguousarray(x).reshape(nb, c, h * w), out, h, w, kh, kw, stride, ph, pw)
    return out


def _product(w, b, wb, cols, groups: int) -> np.ndarray:
    """[C2, n*P] = the filters applied to columns [C*KH*KW + 1, n*P], bias added."""
    if groups == 1:
        return np.matmul(wb, cols)
    wg = w.reshape(groups, w.shape[0] // groups, -1)
    y = np.matmul(wg, cols[:-1].reshape(groups, wg.shape[2], -1)).reshape(w.shape[0], -1)
    y += b[:, None]
    return y


def _images(y, n: int) -> np.ndarray:
    """[C2, n*P] as n images [n, C2, P] (a view)."""
    return y.reshape(y.shape[0], n, -1).transpose(1, 0, 2)


# 3 x 3, stride-1 convolutions with at least WINOGRAD_MIN input and output channels (where the
# tile transforms cost little beside the products) and too large to save their columns run
# their forward as Winograd F(2x2, 3x3) (kernels/conv.py): 16 products per 2 x 2 output tile
# and channel pair instead of 36 (AlexNet's three 13 x 13 layers, batch 8, 2 cores: 29 ms
# instead of 41), as exact as the columns' product in float32. The backward stays with
# the columns.
WINOGRAD_MIN = 32
WINOGRAD_TILES = 512  # tiles a chunk of images holds, about


# The filters' transforms of the last few weight arrays, by address: (a copy of w, u). An entry
# is used only when w still holds exactly the same bits as its copy, so a parameter update or
# load, or another array at the same address, only costs a fresh transform (inference on
# AlexNet's three 3 x 3 layers: 0.4-0.6 ms each, the comparison 0.1).
_TRANSFORMS: dict = {}
TRANSFORMS_KEPT = 8
_transforms_lock = threading.Lock()


def _bits(a) -> np.ndarray:
    """a's entries as unsigned integers of their size, flat."""
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def filter_transform(w) -> np.ndarray:
    """u [16, C2, C] = G w G^T of the 3 x 3 filters w (kernels/conv.py), read-only."""
    key = (w.ctypes.data, w.shape, w.strides, w.dtype.str)
    with _transforms_lock:
        kept = _TRANSFORMS.get(key)
    if kept is not None and np.array_equal(_bits(kept[0]), _bits(w)):
        return kept[1]
    u = np.empty((16, w.shape[0], w.shape[1]), dtype=w.dtype)
    K.winograd_filters(w, u)
    u.flags.writeable = False
    if w.flags.c_contiguous:
        with _transforms_lock:
            _TRANSFORMS.pop(key, None)
            while len(_TRANSFORMS) >= TRANSFORMS_KEPT:
                del _TRANSFORMS[next(iter(_TRANSFORMS))]
            _TRANSFORMS[key] = (w.copy(), u)
    return u


def winograd(x, w, b, ph: int, pw: int, relu: bool = False) -> np.ndarray:
    """conv2d of x [B, C, H, W] by 3 x 3 filters w, stride 1, as Winograd F(2x2, 3x3): the
    tiles' transforms, then one matmul per each of the 16 transform entries, over channels;
    relu (fused) in the output transform."""
    nb, c, h, wd = x.shape
    c2 = w.shape[0]
    ho, wo = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    u = filter_transform(w)
    out = np.empty((nb, c2, ho, wo), dtype=x.dtype)
    for i, j in chunks(nb, th * tw, WINOGRAD_TILES):
        v = np.empty((16, c, (j - i) * th * tw), dtype=x.dtype)
        K.winograd_inputs(x[i:j], v, ph, pw, th, tw)
        K.winograd_outputs(np.matmul(u, v), b, out[i:j], th, tw, relu)
    return out


def _relu(y) -> None:
    """relu in place (a fused conv2d's, on a chunk of the output while it is in cache)."""
    np.maximum(y, 0, out=y)


def conv2d_forward(x, w, b, *, stride: int, padding, groups: int = 1, relu: bool = False):
    """With relu (fuse.py's conv2d + relu), the relu of the convolution."""
    nb, c2, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    ph, pw = pair(padding)
    ho, wo = _out_size(x.shape[2], kh, stride, ph), _out_size(x.shape[3], kw, stride, pw)
    if nb == 0:  # an empty batch: the columns' reshapes cannot split 0 images
        return np.empty((0, c2, ho, wo), dtype=x.dtype), None
    if (kh, kw, stride, groups) == (3, 3, 1, 1) and min(x.shape[1], c2) >= WINOGRAD_MIN \
            and nb * (x.shape[1] * 9 + 1) * ho * wo > SAVE_MAX:
        return winograd(x, w, b, ph, pw, relu), None
    wb = np.concatenate((w.reshape(c2, -1), b.reshape(c2, 1)), axis=1) if groups == 1 else None
    rows = x.shape[1] * kh * kw + 1
    out = np.empty((nb, c2, ho * wo), dtype=x.dtype)
    if nb * rows * ho * wo <= SAVE_MAX:
        cols = columns(x, kh, kw, stride, ph, pw)
        if groups == 1:      # small images: one product per image, straight into out
            np.matmul(wb, _images(cols, nb), out=out)
        else:
            out[...] = _images(_product(w, b, wb, cols, groups), nb)
        if relu:
            _relu(out)
        return out.reshape(nb, c2, ho, wo), cols
    spans = chunks(nb, ho * wo, CHUNK_COLS)
    buf = np.empty(rows * (spans[0][1] - spans[0][0]) * ho * wo, dtype=x.dtype)
    for i, j in spans:
        cols = columns(x[i:j], kh, kw, stride, ph, pw, buf)
        if j - i == 1 and groups == 1:      # one image: its product is already NCHW
            np.matmul(wb, cols, out=out[i])
        else:
            out[i:j] = _images(_product(w, b, wb, cols, groups), j - i)
        if relu:
            _relu(out[i:j])
    return out.reshape(nb, c2, ho, wo), None


def _filter_grads(gi, cols, groups: int) -> np.ndarray:
    """[dW | db] [C2, C/groups*KH*KW + 1] of one chunk: g [C2, n*P] @ its columns^T."""
    if groups == 1:
        return np.matmul(gi, cols.T)
    c2 = gi.shape[0]
    c3 = cols[:-1].reshape(groups, (cols.shape[0] - 1) // groups, -1)
    dwb = np.empty((c2, c3.shape[1] + 1), dtype=gi.dtype)
    dwb[:, :-1] = np.matmul(gi.reshape(groups, c2 // groups, -1),
                            c3.transpose(0, 2, 1)).reshape(c2, -1)
    dwb[:, -1] = gi.sum(axis=1)
    return dwb


def conv2d_backward(g, out, inputs, wants, *, saved, stride, padding, groups: int = 1,
                    relu: bool = False):
    """[dW | db] = g @ cols^T over all images; dx = col2im(W^T g), per group; both with g laid
    out as the columns are, [C2, B*Ho*Wo]. Without saved columns, a chunk of images at a time,
    rebuilding its columns into one buffer. With relu, g is first zeroed where out is not
    positive (relu'(0) = 0, as the relu primitive)."""
    x, w, _ = inputs
    if relu:
        g = E.relu_grad(np.ascontiguousarray(g), np.ascontiguousarray(out))
    nb, c2, ho, wo = g.shape
    if nb == 0:  # no images: no gradient for the filters either
        return tuple(np.zeros(a.shape, dtype=g.dtype) if want else None
                     for a, want in zip(inputs, wants))
    kh, kw = w.shape[2], w.shape[3]
    ph, pw = pair(padding)
    p = ho * wo
    rows = x.shape[1] * kh * kw + 1
    dwb = None
    dx = np.empty(x.shape, dtype=x.dtype) if wants[0] else None
    spans = [(0, nb)] if saved is not None else chunks(nb, p, CHUNK_COLS)
    buf = np.empty(rows * (spans[0][1] - spans[0][0]) * p, dtype=x.dtype) \
        if saved is None and (wants[1] or wants[2]) else None
    c2g = c2 // groups
    wg = w.reshape(groups, c2g, -1)
    for i, j in spans:
        n = j - i
        if n == 1:         # one image's gradient is laid out as its columns already
            gi = g[i].reshape(c2, p)
        else:
            gi = np.empty((c2, n * p), dtype=g.dtype)
            _images(gi, n)[...] = g[i:j].reshape(n, c2, p)
        if wants[1] or wants[2]:
            cols = saved if saved is not None else columns(x[i:j], kh, kw, stride, ph, pw, buf)
            part = _filter_grads(gi, cols, groups)
            if dwb is None:
                dwb = part
            else:
                dwb += part
        if dx is not None:
            if groups == 1:
                dcols = np.matmul(w.reshape(c2, -1).T, gi)
            else:
                dcols = np.matmul(wg.transpose(0, 2, 1), gi.reshape(groups, c2g, -1))
                dcols = dcols.reshape(x.shape[1] * kh * kw, -1)
            K.col2im(dcols, dx[i:j], kh, kw, stride, ph, pw)
    dw = np.ascontiguousarray(dwb[:, :-1]).reshape(w.shape) if wants[1] else None
    db = dwb[:, -1].copy() if wants[2] else None
    return dx, dw, db


def near_relu_kink(inputs: tuple, params: dict, tol: float) -> bool:
    """With relu: some output of the convolution before its relu within tol of 0."""
    if not params.get("relu"):
        return False
    plain = {k: v for k, v in params.items() if k != "relu"}
    return near_zero((conv2d_forward(*inputs, **plain)[0],), params, tol)


register("conv2d", shape=conv2d_shape, forward=conv2d_forward, backward=conv2d_backward,
         smooth=True, kinks=(near_relu_kink,), saves=True)


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
