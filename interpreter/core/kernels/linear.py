"""The passes around a linear layer's GEMM: bias (and relu) in place, and their backward.

On the reference transformer's feed-forward ([2048, 256] float32) the forward pass after the
GEMM takes 50 us here against 210 us for NumPy's `out += b` then `maximum(out, 0)`, and the
backward (relu mask and bias gradient) 225 us against 300 us for the mask then `g.sum(0)`.
relu keeps NaN (`not v <= 0`) and its mask is `out > 0` (0 where NaN), as relu and relu_grad.
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
def relu_vjp_sums(g, out):
    """(gm, db): gm = g where out > 0 else 0, db its column sums (float64 accumulation)."""
    n, m = g.shape
    gm = np.empty_like(g)
    s = np.zeros(m)
    for i in range(n):
        for j in range(m):
            v = g[i, j] if out[i, j] > 0 else 0
            gm[i, j] = v
            s[j] += v
    return gm, s.astype(g.dtype)
