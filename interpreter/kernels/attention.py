"""Transformer kernels: layer normalisation and the (causal, scaled) softmax over rows [N, K].

Both accumulate in float64 whatever the input dtype: a float32 row of 1e4 + 1e-2 noise has
its mean at 1e4 and its spread at 1e-2, and float32 sums would keep about one digit of the
spread. LayerNorm also takes its mean as x0 + mean(x - x0) (x0 the row's first entry), so a
constant row centres to exact zeros and normalises to 0, not to rounding noise times
1 / sqrt(eps); the variance is that of the centred values (two passes, no E[x^2] - E[x]^2).

The softmax shifts each row by its maximum over the unmasked entries, as kernels/softmax.py
does (an infinite maximum is not shifted); masked entries get exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def layernorm_rows(x, eps):
    """(out, rstd): out[i] = (x[i] - mean) * rstd[i], rstd[i] = 1 / sqrt(var + eps), var the
    biased variance of row i."""
    n, d = x.shape
    out = np.empty_like(x)
    rstd = np.empty(n, dtype=x.dtype)
    for i in range(n):
        r, o = x[i], out[i]
        x0 = float(r[0])
        s = 0.0
        for j in range(d):
            s += float(r[j]) - x0
        mean = x0 + s / d
        v = 0.0
        for j in range(d):
            c = float(r[j]) - mean
            v += c * c
        inv = 1.0 / math.sqrt(v / d + eps)
        rstd[i] = inv
        for j in range(d):
            o[j] = (float(r[j]) - mean) * inv
    return out, rstd


@njit(cache=True, error_model="numpy")
def layernorm_rows_vjp(g, y, rstd):
    """dx = rstd * (g - mean(g) - y * mean(g * y)), y the normalised output."""
    n, d = y.shape
    dx = np.empty_like(y)
    for i in range(n):
        sg = 0.0
        sgy = 0.0
        for j in range(d):
            gj = float(g[i, j])
            sg += gj
            sgy += gj * float(y[i, j])
        mg, mgy, inv = sg / d, sgy / d, float(rstd[i])
        for j in range(d):
            dx[i, j] = inv * (float(g[i, j]) - mg - float(y[i, j]) * mgy)
    return dx


@njit(cache=True, error_model="numpy")
def softmax_rows_masked(x, scale, causal):
    """out[r] = softmax(scale * x[r]) over the row's first k entries and 0 after them: k = K,
    or r % K + 1 when causal (x is then [K, K] blocks stacked, row i of a block covers j <= i)."""
    nr, kk = x.shape
    out = np.empty_like(x)
    e = np.empty(kk)
    for r in range(nr):
        k = r % kk + 1 if causal else kk
        xr, o = x[r], out[r]
        m = -np.inf
        for j in range(k):
            v = scale * float(xr[j])
            if v > m:
                m = v
        if math.isinf(m):
            m = 0.0
        s = 0.0
        for j in range(k):
            e[j] = math.exp(scale * float(xr[j]) - m)
            s += e[j]
        inv = 1.0 / s
        for j in range(k):
            o[j] = e[j] * inv
        for j in range(k, kk):
            o[j] = 0.0
    return out


@njit(cache=True, error_model="numpy")
def softmax_rows_masked_vjp(g, y, scale, causal):
    """dx = scale * y * (g - sum_j g_j y_j) over each row's first k entries (as above), 0 after
    them; y the softmax output."""
    nr, kk = y.shape
    dx = np.empty_like(y)
    for r in range(nr):
        k = r % kk + 1 if causal else kk
        gr, yr, d = g[r], y[r], dx[r]
        dot = 0.0
        for j in range(k):
            dot += float(gr[j]) * float(yr[j])
        for j in range(k):
            d[j] = scale * float(yr[j]) * (float(gr[j]) - dot)
        for j in range(k, kk):
            d[j] = 0.0
    return dx
