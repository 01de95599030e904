"""Loss kernels: fused, stable cross-entropy over rows of logits [N, K] with labels [N].

loss[i] = logsumexp(x[i]) - x[i, label[i]], computed as (m - x[i, label]) + log(sum exp(x - m))
with m the row maximum, so a 1000 gap gives exactly 1000 and [3e38, -3e38] stays finite for
the right label. Labels are trusted here: the wrapper in `primitives/losses.py` checks their
range, so no kernel reads out of bounds. A label of -1 marks a row that is not scored: loss 0,
gradient 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .softmax import exp_rows


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def cross_entropy_rows(x, labels):
    n = x.shape[0]
    out = np.empty(n, dtype=x.dtype)
    _, m, s = exp_rows(x)
    for i in range(n):
        if labels[i] < 0:
            out[i] = 0.0
            continue
        out[i] = (m[i] - float(x[i, labels[i]])) + math.log(s[i])
    return out


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def cross_entropy_rows_vjp(g, x, labels):
    """dx[i, j] = g[i] * (softmax(x)[i, j] - [j == label[i]]); the softmax is recomputed
    (two passes over the row) rather than rebuilt from the rounded loss."""
    n, k = x.shape
    dx, _, s = exp_rows(x)
    for i in range(n):
        if labels[i] < 0:
            dx[i, :] = 0.0
            continue
        inv = 1.0 / s[i]
        gi = float(g[i])
        lab = dx[i, labels[i]]
        for j in range(k):
            dx[i, j] = gi * (float(dx[i, j]) * inv)
        dx[i, labels[i]] = gi * (float(lab) * inv - 1.0)
    return dx
