"""Softmax-family kernels: rows of a C-contiguous 2-D array [N, K] (the last axis is K).

One fused call beats the chain of NumPy calls of `primitives/reduce.py` at every size measured
there (its NumPy path takes only arrays above KERNEL_MAX_SIZE).

Every row is shifted by its maximum before `exp`, so nothing overflows (a row of 1e4s, or
[3e38, -3e38], stays finite). A row whose maximum is infinite is not shifted (`-inf - -inf`
would be NaN; an all `-inf` row then gives `logsumexp = -inf`, as it should). NaN anywhere in a
row makes the row's sum NaN, so NaN propagates. Sums are accumulated in float64 whatever the
input dtype; outputs have the input's dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .vmath import exp_


@njit(cache=True, error_model="numpy")
def row_shift(x, i):
    """The shift for row i: its maximum, or 0.0 when the maximum is infinite (NaN is skipped
    here and propagates through the sum instead)."""
    m = -np.inf
    for j in range(x.shape[1]):
        v = float(x[i, j])
        if v > m:
            m = v
    if math.isinf(m):
        m = 0.0
    return m


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def exp_rows(x):
    """(e, m, s): e[i, j] = exp(x[i, j] - m[i]) in x's dtype, m[i] = row_shift(x, i), s[i] the
    float64 sum of row i of e. Three passes (shift, exp, sums), so that the exp runs as one loop
    over all N * K entries: a loop over one row of K = 103 leaves a scalar remainder of up to
    15 exps per row, which cost as much as the vectorised rest."""
    n, k = x.shape
    e = np.empty_like(x)
    m = np.empty(n)
    for i in range(n):
        mi = row_shift(x, i)
        m[i] = mi
        mm = x.dtype.type(mi)
        for j in range(k):
            e[i, j] = x[i, j] - mm
    flat = e.reshape(-1)
    for t in range(flat.size):
        flat[t] = exp_(flat[t])
    s = np.empty(n)
    for i in range(n):
        a = 0.0
        for j in range(k):
            a += float(e[i, j])
        s[i] = a
    return e, m, s


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def softmax_rows(x):
    n, k = x.shape
    e, _, s = exp_rows(x)
    for i in range(n):
        inv = 1.0 / s[i]
        for j in range(k):
            e[i, j] = float(e[i, j]) * inv
    return e


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def softmax_rows_vjp(g, y):
    """dx = y * (g - sum_j g_j y_j), with y the softmax output."""
    n, k = y.shape
    dx = np.empty_like(y)
    for i in range(n):
        dot = 0.0
        for j in range(k):
            dot += float(g[i, j]) * float(y[i, j])
        for j in range(k):
            dx[i, j] = float(y[i, j]) * (float(g[i, j]) - dot)
    return dx


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def log_softmax_rows(x):
    n, k = x.shape
    out, m, s = exp_rows(x)
    for i in range(n):
        log_s = math.log(s[i])
        for j in range(k):
            out[i, j] = (float(x[i, j]) - m[i]) - log_s
    return out


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def log_softmax_rows_vjp(g, y):
    """dx = g - softmax * sum_j g_j, with softmax = exp(y) and y the log-softmax output.

    exp(y) is accurate enough: y carries an absolute error of about ulp(|y|), and the
    softmax it feeds is exp(-|y|), which is tiny wherever |y| (hence the error) is large."""
    n, k = y.shape
    dx = np.empty_like(y)
    for i in range(n):
        sg = 0.0
        for j in range(k):
            sg += float(g[i, j])
        for j in range(k):
            dx[i, j] = float(g[i, j]) - float(exp_(y[i, j])) * sg
    return dx


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def logsumexp_rows(x):
    n = x.shape[0]
    out = np.empty(n, dtype=x.dtype)
    _, m, s = exp_rows(x)
    for i in range(n):
        out[i] = m[i] + math.log(s[i])
    return out


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def logsumexp_rows_vjp(g, x):
    """dx[i, j] = g[i] * softmax(x)[i, j].

    The softmax is recomputed from x instead of using exp(x - out): out is rounded to the
    output dtype, and in float32 ulp(1e4) ~ 1e-3 would become a 1e-3 relative gradient error."""
    n, k = x.shape
    dx, _, s = exp_rows(x)
    for i in range(n):
        scale = float(g[i]) / s[i]
        for j in range(k):
            dx[i, j] = float(dx[i, j]) * scale
    return dx
