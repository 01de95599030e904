"""Convolution and pooling kernels on NCHW arrays: im2col/col2im around BLAS, and max pooling.

`im2col` lays images out as columns [B, C*KH*KW + 1, Ho*Wo] (row (c*KH + ki)*KW + kj holds
x[b, c, oh*s + ki - ph, ow*s + kj - pw], zero in the padding) plus a last row of ones, so one
matmul with [w | b] gives the NCHW output with its bias, and the matmul of the output gradient
with the columns gives [dW | db] (primitives/conv.py).

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
def im2col(x, cols, kh, kw, stride, ph, pw):
    """Fill cols [B, C*KH*KW + 1, Ho*Wo] from x [B, C, H, W]. The copy loop indexes with
    uint64: Numba then drops its negative-index wraparound, which made the loop 1.6-2x slower."""
    nb, nc, h, w = x.shape
    ho = (h + 2 * ph - kh) // stride + 1
    wo = (w + 2 * pw - kw) // stride + 1
    for b in range(nb):
        for c in range(nc):
            for ki in range(kh):
                for kj in range(kw):
                    r = (c * kh + ki) * kw + kj
                    lo, hi = _inside(wo, w, kj, stride, pw)
                    src, su = uint64(lo * stride + kj - pw), uint64(stride)
                    for oh in range(ho):
                        i = oh * stride + ki - ph
                        base = oh * wo
                        if i < 0 or i >= h:
                            for ow in range(wo):
                                cols[b, r, base + ow] = 0
                            continue
                        for ow in range(lo):
                            cols[b, r, base + ow] = 0
                        dst = uint64(base + lo)
                        for t in range(uint64(hi - lo)):
                            cols[b, r, dst + t] = x[b, c, i, src + t * su]
                        for ow in range(hi, wo):
                            cols[b, r, base + ow] = 0
        for t in range(ho * wo):
            cols[b, nc * kh * kw, t] = 1


@njit(cache=True, error_model="numpy")
def col2im(dcols, dx, kh, kw, stride, ph, pw):
    """dx [B, C, H, W] = the adjoint of im2col applied to dcols [B, C*KH*KW, Ho*Wo]: each x
    entry gets the sum of the column entries im2col copied it to."""
    nb, nc, h, w = dx.shape
    ho = (h + 2 * ph - kh) // stride + 1
    wo = (w + 2 * pw - kw) // stride + 1
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
                        src, dst = uint64(oh * wo + lo), uint64(lo * stride + kj - pw)
                        for t in range(uint64(hi - lo)):
                            acc[i, dst + t * uint64(stride)] += dcols[b, r, src + t]
            for i in range(h):
                for j in range(w):
                    dx[b, c, i, j] = acc[i, j]


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
