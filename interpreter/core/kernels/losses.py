"""Loss kernels: fused, stable cross-entropy over rows of logits [N, K] with labels [N].

loss[i] = logsumexp(x[i]) - x[i, label[i]], computed as (m - x[i, label]) + log(sum exp(x - m))
with m the row maximum, so a 1000 gap gives exactly 1000 and [3e38, -3e38] stays finite for
the right label. Labels are trusted here: the wrapper in `primitives/losses.py` checks their
range, so no kernel reads out of bounds. A label of -1 marks a row that is not scored: loss 0,
gradient 0.
"""

from __future__ import annotations

import math

from numba import njit
import numpy as np

from .softmax import row_exp, row_shift, row_sum_exp


@njit(cache=True, error_model="numpy")
def cross_entropy_rows(x, labels):
    n = x.shape[0]
    out = np.empty(n, dtype=x.dtype)
    for i in range(n):
        if labels[i] < 0:
            out[i] = 0.0
            continue
        m = row_shift(x, i)
        s = row_sum_exp(x, i, m)
        out[i] = (m - float(x[i, labels[i]])) + math.log(s)
    return out


@njit(cache=True, error_model="numpy")
def cross_entropy_rows_vjp(g, x, labels):
    """dx[i, j] = g[i] * (softmax(x)[i, j] - [j == label[i]]); the softmax is recomputed
    (two passes over the row) rather than rebuilt from the rounded loss."""
    n, k = x.shape
    dx = np.empty_like(x)
    e = np.empty(k)
    for i in range(n):
        if labels[i] < 0:
            dx[i, :] = 0.0
            continue
        inv = 1.0 / row_exp(x, i, row_shift(x, i), e)
        gi = float(g[i])
        for j in range(k):
            dx[i, j] = gi * (e[j] * inv)
        dx[i, labels[i]] = gi * (e[labels[i]] * inv - 1.0)
    return dx
