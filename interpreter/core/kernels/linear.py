"""The passes around a linear layer's GEMM: bias (and relu) in place, and their backward; and
the whole layer for a product too small for BLAS.

On the reference transformer's feed-forward ([2048, 256] float32) the forward pass after the
GEMM takes 50 us here against 210 us for NumPy's `out += b` then `maximum(out, 0)`, and the
backward (relu mask and bias gradient) 225 us against 300 us for the mask then `g.sum(0)`.
relu keeps NaN (`not v <= 0`) and its mask is `out > 0` (0 where NaN), as relu and relu_grad.

A batch-1 layer of the digits MLP (64 -> 128) costs 1.9 us through NumPy's matmul (1.5 us of
it the call into OpenBLAS) and the bias pass, 0.9 us as `small_linear`; at 1 x 1024 x 1024
BLAS is the faster by 2x, so primitives/linalg.py sends only small products here.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def bias_act(out, b, relu):
    """out[i] = out[i] + b, then relu if asked, in place (out C-contiguous [N, M])."""
    n, m = out.shape
    for i in range(n):
        r = out[i]
        for j in range(m):
            v = r[j] + b[j]
            r[j] = 0 if relu and v <= 0 else v


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def relu_vjp_sums(g, out, db):
    """Returns gm = g where out > 0 else 0, and writes its column sums into db (float64
    accumulation): db may be the bias's view of the flat gradient buffer."""
    n, m = g.shape
    gm = np.empty_like(g)
    s = np.zeros(m)
    for i in range(n):
        for j in range(m):
            v = g[i, j] if out[i, j] > 0 else 0
            gm[i, j] = v
            s[j] += v
    for j in range(m):
        db[j] = s[j]
    return gm


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def small_linear(x, w, b, relu, out):
    """out = x @ w.T (+ b when b has entries), then relu if asked (x [N, K], w [M, K], out
    [N, M]). The sum is in x's dtype as BLAS's is (float32 at run time); `reassoc` lets it
    vectorize, nothing else is relaxed."""
    n, k = x.shape
    m = w.shape[0]
    bias = b.shape[0] > 0
    for i in range(n):
        for j in range(m):
            acc = x.dtype.type(0)
            for q in range(k):
                acc += x[i, q] * w[j, q]
            if bias:
                acc += b[j]
            out[i, j] = 0 if relu and acc <= 0 else acc
