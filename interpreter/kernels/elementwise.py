"""Elementwise kernels over flat (1-D, C-contiguous) arrays: GELU forward and backward.

GELU uses the tanh approximation 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi).
One pass replaces a chain of about eight NumPy temporaries. Arithmetic is in float64 (x^3 of
a large float32 stays finite there), and the result is stored in the input's dtype.
"""

from __future__ import annotations

import math

from numba import njit
import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


@njit(cache=True, error_model="numpy")
def gelu(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        v = float(x[i])
        t = math.tanh(GELU_C * (v + GELU_A * v * v * v))
        out[i] = 0.5 * v * (1.0 + t)
    return out


@njit(cache=True, error_model="numpy")
def gelu_vjp(g, x):
    """d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2), with t = tanh(c (x + a x^3))."""
    dx = np.empty_like(x)
    for i in range(x.shape[0]):
        v = float(x[i])
        t = math.tanh(GELU_C * (v + GELU_A * v * v * v))
        d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * v * v)
        dx[i] = float(g[i]) * d
    return dx
