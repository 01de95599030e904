"""Softmax-family kernels: rows of a C-contiguous 2-D array [N, K] (the last axis is K).

They serve arrays of up to a few thousand elements, where one fused call beats a chain of
NumPy calls; above that, `primitives/reduce.py` uses NumPy's SIMD `exp` instead.

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


@njit(cache=True, error_model="numpy")
def row_sum_exp(x, i, m):
    """sum_j exp(x[i, j] - m) in float64."""
    s = 0.0
    for j in range(x.shape[1]):
        s += math.exp(float(x[i, j]) - m)
    return s


@njit(cache=True, error_model="numpy")
def row_exp(x, i, m, e):
    """e[j] = exp(x[i, j] - m) (float64 scratch of length K); returns their sum."""
    s = 0.0
    for j in range(x.shape[1]):
        e[j] = math.exp(float(x[i, j]) - m)
        s += e[j]
    return s


@njit(cache=True, error_model="numpy")
def softmax_rows(x):
    n, k = x.shape
    out = np.empty_like(x)
    e = np.empty(k)
    for i in range(n):
        inv = 1.0 / row_exp(x, i, row_shift(x, i), e)
        for j in range(k):
            out[i, j] = e[j] * inv
    return out


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def log_softmax_rows(x):
    n, k = x.shape
    out = np.empty_like(x)
    for i in range(n):
        m = row_shift(x, i)
        log_s = math.log(row_sum_exp(x, i, m))
        for j in range(k):
            out[i, j] = (float(x[i, j]) - m) - log_s
    return out


@njit(cache=True, error_model="numpy")
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
            dx[i, j] = float(g[i, j]) - math.exp(float(y[i, j])) * sg
    return dx


@njit(cache=True, error_model="numpy")
def logsumexp_rows(x):
    n = x.shape[0]
    out = np.empty(n, dtype=x.dtype)
    for i in range(n):
        m = row_shift(x, i)
        out[i] = m + math.log(row_sum_exp(x, i, m))
    return out


@njit(cache=True, error_model="numpy")
def logsumexp_rows_vjp(g, x):
    """dx[i, j] = g[i] * softmax(x)[i, j].

    The softmax is recomputed from x instead of using exp(x - out): out is rounded to the
    output dtype, and in float32 ulp(1e4) ~ 1e-3 would become a 1e-3 relative gradient error."""
    n, k = x.shape
    dx = np.empty_like(x)
    e = np.empty(k)
    for i in range(n):
        scale = float(g[i]) / row_exp(x, i, row_shift(x, i), e)
        for j in range(k):
            dx[i, j] = e[j] * scale
    return dx
