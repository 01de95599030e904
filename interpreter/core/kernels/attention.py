"""Transformer kernels: layer normalisation, and the row work of a masked, scaled softmax.

Rows of C-contiguous [N, K] arrays, float32 or float64, sums in float64 whatever the dtype: a
float32 row of 1e4 + 1e-2 noise has its mean at 1e4 and its spread at 1e-2, and float32 sums
would keep about one digit of the spread. LayerNorm also takes the mean as x0 + mean(x - x0)
(x0 the row's first entry), so a constant row centres to exact zeros and normalises to 0, not
to rounding noise times 1 / sqrt(eps); the variance is that of the centred values (two passes,
not E[x^2] - E[x]^2, which cancels). Measured (float32, forward + backward) against the same
formula as a NumPy chain: 0.39 against 0.51 ms on [32, 64, 64], 4.4 against 21 us on [32, 10].

The softmax is split around NumPy's exp (see primitives/attention.py for why): `masked_shift`
shifts each row by its maximum over the unmasked entries, as kernels/softmax.py does (an
infinite maximum is not shifted), and writes -inf at the masked ones, whose exp is exactly 0;
`masked_normalise` divides by the float64 row sums. The loops that write whole rows select
per entry instead of stopping at the mask: a loop over all K vectorises without a scalar
remainder (the VJP took 0.38 instead of 0.42 ms on [8192, 64]).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# fastmath={"reassoc", "contract"}: reassociation lets LLVM vectorise the row sums (partial
# sums instead of one chain); NaN and inf keep their meaning (no nnan/ninf). LayerNorm's
# forward on [2048, 64] float32: 227 -> 68 us; its affine backward 243 -> 141 us.


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
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


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def layernorm_affine_rows(x, gain, bias, eps):
    """(out, xhat, rstd): out[i] = xhat[i] * gain + bias, xhat and rstd as layernorm_rows."""
    xhat, rstd = layernorm_rows(x, eps)
    out = np.empty_like(x)
    n, d = x.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = xhat[i, j] * gain[j] + bias[j]
    return out, xhat, rstd


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def layernorm_rows_vjp(g, xhat, rstd, gain):
    """(dx, dgain, dbias) of out = xhat * gain + bias (gain of ones for a bare layernorm):
    dx = rstd * (gain g - mean(gain g) - xhat * mean(gain g xhat)), one pass over the rows;
    the sums over rows in float64."""
    n, d = xhat.shape
    dx = np.empty_like(xhat)
    dgain = np.zeros(d)
    dbias = np.zeros(d)
    for i in range(n):
        sg = 0.0
        sgy = 0.0
        for j in range(d):
            gj = float(g[i, j])
            yj = float(xhat[i, j])
            dgain[j] += gj * yj
            dbias[j] += gj
            gj *= float(gain[j])
            sg += gj
            sgy += gj * yj
        mg, mgy, inv = sg / d, sgy / d, float(rstd[i])
        for j in range(d):
            dx[i, j] = inv * (float(g[i, j]) * float(gain[j]) - mg - float(xhat[i, j]) * mgy)
    return dx, dgain.astype(xhat.dtype), dbias.astype(xhat.dtype)


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def masked_shift(x, scale, causal):
    """z[r, j] = scale * x[r, j] - m_r for the row's first k entries and -inf after them
    (exp(-inf) = 0 exactly): k = K, or r % K + 1 when causal (x is then [K, K] blocks stacked,
    row i of a block covers j <= i). m_r is the maximum of scale * x[r, :k], or 0 if infinite."""
    nr, kk = x.shape
    z = np.empty_like(x)
    for r in range(nr):
        k = r % kk + 1 if causal else kk
        xr, zr = x[r], z[r]
        m = -np.inf
        for j in range(k):
            v = scale * float(xr[j])
            if v > m:  # noqa: PLR1730 (an if, not max(): NaN is skipped here)
                m = v
        if math.isinf(m):
            m = 0.0
        for j in range(kk):
            zr[j] = scale * float(xr[j]) - m if j < k else -np.inf
    return z


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def masked_normalise(e, causal):
    """e[r, :k] /= sum(e[r, :k]) in place (k as above; the masked entries are already 0)."""
    nr, kk = e.shape
    for r in range(nr):
        k = r % kk + 1 if causal else kk
        er = e[r]
        s = 0.0
        for j in range(k):
            s += float(er[j])
        inv = 1.0 / s
        for j in range(kk):
            er[j] = er[j] * inv if j < k else 0.0


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def masked_softmax_vjp(g, y, scale, causal):
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
        for j in range(kk):
            d[j] = scale * float(yr[j]) * (float(gr[j]) - dot) if j < k else 0.0
    return dx
