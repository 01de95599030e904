"""Convolution and pooling kernels on NCHW arrays: im2col/col2im around BLAS, Winograd
F(2x2, 3x3) transforms, and max pooling.

`im2col` lays images out as columns [C*KH*KW + 1, B*Ho*Wo] (row (c*KH + ki)*KW + kj, column
b*Ho*Wo + oh*Wo + ow holds x[b, c, oh*s + ki - ph, ow*s + kj - pw], zero in the padding) plus
a last row of ones, so one matmul with [w | b] gives the output of all B images with its bias,
and the matmul of the output gradient with the columns gives [dW | db] (primitives/conv.py).

What measured faster, and why the kernels look as they do:
- The caller allocates every output with NumPy: a large array allocated inside Numba is
  first-touched page by page (NumPy asks for huge pages), which made im2col 3x slower.
- Serial loops: with `prange` the kernels fought OpenBLAS's spinning worker thread for the two
  cores and ran up to 4x slower.
- Plain 4-D indexing: row views and slice assignments cost 2-3x on short rows.
- Sums (col2im, overlapping pools) go through float64 scratch.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64


@njit(cache=True, error_model="numpy")
def _inside(wo, w, kj, stride, pad):
    """[lo, hi): the output columns ow whose input column ow*stride + kj - pad is inside x."""
    lo = 0
    while lo < wo and lo * stride + kj - pad < 0:
        lo += 1
    hi = wo
    while hi > lo and (hi - 1) * stride + kj - pad >= w:
        hi -= 1
    return lo, hi


@njit(cache=True, error_model="numpy")
def im2col(x, cols, h, w, kh, kw, stride, ph, pw):
    """Fill cols [C*KH*KW + 1, B*Ho*Wo] from the images x [B, C, H*W] (flat planes): image b's
    columns are b*Ho*Wo ... (b + 1)*Ho*Wo - 1. The copy loops index with uint64: Numba then
    drops its negative-index wraparound, which made them 1.6-2x slower. Strides above 1 go
    through the planes' phases (_phased_columns)."""
    nb, nc = x.shape[0], x.shape[1]
    ho = (h + 2 * ph - kh) // stride + 1
    wo = (w + 2 * pw - kw) // stride + 1
    p = ho * wo
    if stride > 1:
        _phased_columns(x, cols, h, w, kh, kw, stride, ph, pw, ho, wo)
    for b in range(nb if stride == 1 else 0):  # (strided: every image done above)
        for c in range(nc):
            for ki in range(kh):
                for kj in range(kw):
                    r = (c * kh + ki) * kw + kj
                    if stride == 1 and wo == w:
                        _shifted_plane(x, cols, b, c, r, h, w, ho, ki - ph, kj - pw)
                        continue
                    lo, hi = _inside(wo, w, kj, stride, pw)
                    src, su = uint64(lo * stride + kj - pw), uint64(stride)
                    for oh in range(ho):
                        i = oh * stride + ki - ph
                        base = b * p + oh * wo
                        if i < 0 or i >= h:
                            for ow in range(wo):
                                cols[r, base + ow] = 0
                            continue
                        for ow in range(lo):
                            cols[r, base + ow] = 0
                        dst, row = uint64(base + lo), uint64(i * w) + src
                        for t in range(uint64(hi - lo)):
                            cols[r, dst + t] = x[b, c, row + t * su]
                        for ow in range(hi, wo):
                            cols[r, base + ow] = 0
    for t in range(nb * p):
        cols[nc * kh * kw, t] = 1


@njit(cache=True, error_model="numpy")
def _phased_columns(x, cols, h, w, kh, kw, stride, ph, pw, ho, wo):
    """im2col's rows for stride s > 1, through the s * s phases of each zero-padded plane:
    phase (a, e) holds the pixels at rows a, a + s, ... and columns e, e + s, ..., so window
    entry (ki, kj) of output row oh is the contiguous run of phase (ki % s, kj % s), row
    oh + ki // s, from column kj // s: a plain copy where the direct gather reads every s-th
    pixel for every entry (AlexNet's 11 x 11, stride-4 layer: 2x faster). The phases (flat
    in q) are one strided gather of the plane, with the padding's zeros."""
    nb, nc = x.shape[0], x.shape[1]
    hq, wq = ho + (kh - 1) // stride, wo + (kw - 1) // stride
    q = np.empty(stride * stride * hq * wq, dtype=cols.dtype)
    p, su = ho * wo, uint64(stride)
    for b in range(nb):
        for c in range(nc):
            for a in range(stride):
                for e in range(stride):
                    inside = _inside(wq, w, e, stride, pw)
                    for i in range(hq):
                        o, r = ((a * stride + e) * hq + i) * wq, i * stride + a - ph
                        lo, hi = inside if 0 <= r < h else (wq, wq)  # a row of padding
                        for j in range(lo):
                            q[o + j] = 0
                        src = uint64(max(r * w + lo * stride + e - pw, 0))  # (0: none)
                        dst = uint64(o + lo)
                        for t in range(uint64(hi - lo)):
                            q[dst + t] = x[b, c, src + t * su]
                        for j in range(hi, wq):
                            q[o + j] = 0
            for ki in range(kh):
                for kj in range(kw):
                    r = (c * kh + ki) * kw + kj
                    src = uint64((((ki % stride) * stride + kj % stride) * hq + ki // stride)
                                 * wq + kj // stride)
                    for oh in range(uint64(ho)):
                        at, dst = src + oh * uint64(wq), uint64(b * p) + oh * uint64(wo)
                        for t in range(uint64(wo)):
                            cols[r, dst + t] = q[at + t]


@njit(cache=True, error_model="numpy", inline="always")
def _shifted_plane(x, cols, b, c, r, h, w, ho, di, dj):
    """im2col's row r for image b when stride is 1 and the output is as wide as x: output t
    reads x's plane at t + di*w + dj, so one long copy does every row (1.6x faster at 8 x 8),
    then the columns that wrapped around a row's end and the rows outside x become 0."""
    p = ho * w
    base = b * p
    oa, ob = min(max(0, -di), ho), max(min(ho, h - di), 0)
    lo, hi = oa * w, max(ob, oa) * w
    a, z = min(max(lo, -(di * w + dj)), hi), max(min(hi, h * w - (di * w + dj)), lo)
    for t in range(lo):
        cols[r, base + t] = 0
    for t in range(lo, a):
        cols[r, base + t] = 0
    dst, src = uint64(base + a), uint64(a + di * w + dj)
    for t in range(uint64(max(z - a, 0))):
        cols[r, dst + t] = x[b, c, src + t]
    for t in range(max(z, a), p):
        cols[r, base + t] = 0
    if dj < 0:
        for oh in range(oa, ob):
            for ow in range(-dj):
                cols[r, base + oh * w + ow] = 0
    elif dj > 0:
        for oh in range(oa, ob):
            for ow in range(w - dj, w):
                cols[r, base + oh * w + ow] = 0


@njit(cache=True, error_model="numpy")
def col2im(dcols, dx, kh, kw, stride, ph, pw):
    """dx [B, C, H, W] = the adjoint of im2col applied to dcols [C*KH*KW, B*Ho*Wo]: each x
    entry gets the sum of the column entries im2col copied it to."""
    nb, nc, h, w = dx.shape
    ho = (h + 2 * ph - kh) // stride + 1
    wo = (w + 2 * pw - kw) // stride + 1
    p = ho * wo
    acc = np.empty((h, w))
    for b in range(nb):
        for c in range(nc):
            acc[:] = 0.0
            for ki in range(kh):
                for kj in range(kw):
                    r = (c * kh + ki) * kw + kj
                    lo, hi = _inside(wo, w, kj, stride, pw)
                    for oh in range(ho):
                        i = oh * stride + ki - ph
                        if i < 0 or i >= h:
                            continue
                        src, dst = uint64(b * p + oh * wo + lo), uint64(lo * stride + kj - pw)
                        for t in range(uint64(hi - lo)):
                            acc[i, dst + t * uint64(stride)] += dcols[r, src + t]
            for i in range(h):
                for j in range(w):
                    dx[b, c, i, j] = acc[i, j]


# Winograd F(2x2, 3x3): a 3 x 3, stride-1 convolution computed on 2 x 2 output tiles, each from
# the 4 x 4 input patch under it, with 16 products per tile and channel pair instead of 36:
# y = A^T [sum over c of (G w G^T) * (B^T d B)] A, the sum over channels being 16 matmuls
# (primitives/conv.py). Tile t = (b*TH + i)*TW + j covers outputs [2i, 2i + 2) x [2j, 2j + 2).
# Output row 0 of a tile reads only patch rows 0-2 and row 1 only rows 1-3 (likewise columns),
# so a NaN reaches exactly the outputs whose window holds it.


@njit(cache=True, error_model="numpy")
def winograd_filters(w, u):
    """u [16, C2, C] = G w G^T for each 3 x 3 filter of w [C2, C, 3, 3], G = [[1, 0, 0],
    [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]; entry 4*a + b of the 4 x 4 result."""
    nk, nc = w.shape[0], w.shape[1]
    g = np.empty((4, 3, nc))
    for k in range(nk):
        for s in range(3):
            for c in range(nc):
                a0, a1, a2 = float(w[k, c, 0, s]), float(w[k, c, 1, s]), float(w[k, c, 2, s])
                g[0, s, c] = a0
                g[1, s, c] = 0.5 * (a0 + a1 + a2)
                g[2, s, c] = 0.5 * (a0 - a1 + a2)
                g[3, s, c] = a2
        for a in range(4):
            for c in range(nc):
                g0, g1, g2 = g[a, 0, c], g[a, 1, c], g[a, 2, c]
                u[4 * a, k, c] = g0
                u[4 * a + 1, k, c] = 0.5 * (g0 + g1 + g2)
                u[4 * a + 2, k, c] = 0.5 * (g0 - g1 + g2)
                u[4 * a + 3, k, c] = g2


@njit(cache=True, error_model="numpy")
def winograd_inputs(x, v, ph, pw, th, tw):
    """v [16, C, B*TH*TW] = B^T d B for the 4 x 4 patch d of each tile of x [B, C, H, W]
    (zero outside x), B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. A
    plane at a time: its rows' transforms q = B^T d for every tile row (long loops), then
    the columns' (measured 1.3x faster than tile by tile)."""
    nb, nc, h, w = x.shape
    d = np.zeros((2 * th + 2, 2 * tw + 2))
    q = np.empty((4, th, 2 * tw + 2))
    for b in range(nb):
        for c in range(nc):
            for i in range(h):
                for j in range(w):
                    d[i + ph, j + pw] = x[b, c, i, j]
            for i in range(th):
                r = 2 * i
                for s in range(2 * tw + 2):
                    q[0, i, s] = d[r, s] - d[r + 2, s]
                    q[1, i, s] = d[r + 1, s] + d[r + 2, s]
                    q[2, i, s] = d[r + 2, s] - d[r + 1, s]
                    q[3, i, s] = d[r + 1, s] - d[r + 3, s]
            for a in range(4):
                for i in range(th):
                    t0 = (b * th + i) * tw
                    for j in range(tw):
                        q0, q1 = q[a, i, 2 * j], q[a, i, 2 * j + 1]
                        q2, q3 = q[a, i, 2 * j + 2], q[a, i, 2 * j + 3]
                        v[4 * a, c, t0 + j] = q0 - q2
                        v[4 * a + 1, c, t0 + j] = q1 + q2
                        v[4 * a + 2, c, t0 + j] = q2 - q1
                        v[4 * a + 3, c, t0 + j] = q1 - q3


@njit(cache=True, error_model="numpy")
def winograd_outputs(m, bias, out, th, tw, relu=False):
    """out [B, C2, Ho, Wo] = A^T M A + bias for the tiles' products m [16, C2, B*TH*TW],
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]; the outputs past Ho, Wo are dropped; with relu, a
    fused relu after them (`v <= 0` keeps NaN). A plane at a time: A^T M for all its tiles in
    one long loop, then the rows (2-2.7x faster than tile by tile)."""
    nb, nk, ho, wo = out.shape
    p = th * tw
    e = np.empty((2, 4, p))
    for b in range(nb):
        for k in range(nk):
            bk = float(bias[k])
            for s in range(4):
                for t in range(p):
                    m1, m2 = float(m[4 + s, k, b * p + t]), float(m[8 + s, k, b * p + t])
                    e[0, s, t] = float(m[s, k, b * p + t]) + m1 + m2
                    e[1, s, t] = m1 - m2 - float(m[12 + s, k, b * p + t])
            for i in range(th):
                for a in range(2):
                    o = 2 * i + a
                    if o >= ho:
                        break
                    for j in range(wo // 2):
                        u = i * tw + j
                        out[b, k, o, 2 * j] = bk + e[a, 0, u] + e[a, 1, u] + e[a, 2, u]
                        out[b, k, o, 2 * j + 1] = bk + e[a, 1, u] - e[a, 2, u] - e[a, 3, u]
                    if wo % 2:
                        u = i * tw + wo // 2
                        out[b, k, o, wo - 1] = bk + e[a, 0, u] + e[a, 1, u] + e[a, 2, u]
            if relu:  # a pass of its own over the plane, in L1: the loops above stay lean
                for o in range(ho):
                    for j in range(wo):
                        v = out[b, k, o, j]
                        out[b, k, o, j] = 0 if v <= 0 else v


@njit(cache=True, error_model="numpy")
def maxpool(x, out, idx, size, stride, has_nan):
    """Window maxima into out, and where they are into idx (flat index into the H*W plane):
    the first maximum in row-major window order. The common sizes get a copy of the loop with
    `size` a constant (inlined, so LLVM unrolls the window: 2x faster). The fast loop's plain
    `>` skips NaN (a NaN-aware test in it was 1.5x slower), so when the caller saw a NaN in x
    (`has_nan`), the NaN-aware loop runs instead."""
    if has_nan:
        maxpool_sized(x, out, idx, size, stride, True)
    elif size == 2:
        maxpool_sized(x, out, idx, 2, stride, False)
    elif size == 3:
        maxpool_sized(x, out, idx, 3, stride, False)
    else:
        maxpool_sized(x, out, idx, size, stride, False)


@njit(cache=True, error_model="numpy")
def maxpool_sized(x, out, idx, size, stride, nan_aware):
    """maxpool's loop; with nan_aware, a window holding NaN gives its first NaN."""
    nb, nc, _, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for b in range(nb):
        for c in range(nc):
            for oh in range(ho):
                i0 = oh * stride
                for ow in range(wo):
                    j0 = ow * stride
                    best = x[b, c, i0, j0]
                    at = i0 * w + j0
                    for i in range(i0, i0 + size):
                        for j in range(j0, j0 + size):
                            v = x[b, c, i, j]
                            if v > best or (nan_aware and math.isnan(v) and not math.isnan(best)):
                                best = v
                                at = i * w + j
                    out[b, c, oh, ow] = best
                    idx[b, c, oh, ow] = at


@njit(cache=True, error_model="numpy")
def maxpool_grad(g, idx, dx):
    """dx: each window's gradient added at its maximum (overlapping windows accumulate)."""
    nb, nc, ho, wo = g.shape
    h, w = dx.shape[2], dx.shape[3]
    acc = np.empty(h * w)
    for b in range(nb):
        for c in range(nc):
            acc[:] = 0.0
            for oh in range(ho):
                for ow in range(wo):
                    acc[idx[b, c, oh, ow]] += g[b, c, oh, ow]
            for i in range(h):
                for j in range(w):
                    dx[b, c, i, j] = acc[i * w + j]
