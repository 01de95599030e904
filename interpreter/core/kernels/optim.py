"""Optimizer kernels: one pass over the flat parameter, gradient and state arrays.

All of a model's parameters live in one contiguous 1-D array, and so do the gradients and each
optimizer state, so a whole optimizer step is one call here. The kernels are plain loops,
generic over the float dtype (float32 at run time, float64 in the exactness tests). Scalar
factors such as Adam's bias corrections are computed by the caller in float64 and cast here to
the array dtype, so a float32 step is float32 arithmetic throughout, as in torch.

No fastmath (only `reassoc` on the norm's sum), and `error_model="numpy"` (the kernel rules of
kernels/__init__.py): a division by zero gives inf or nan as in NumPy instead of raising,
which also lets the loops vectorize. The loops are serial: no result depends on the thread count.

The maths of each optimizer is written out in `interpreter/core/optim.py`.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def _check_sizes(p, g, s):
    if g.shape[0] != p.shape[0] or s.shape[0] != p.shape[0]:
        raise ValueError("optimizer arrays differ in size")


@njit(cache=True, error_model="numpy")
def sgd_step(p, g, buf, lr, momentum, weight_decay, nesterov):
    """In place: p, and buf when momentum != 0 (buf may then be empty otherwise)."""
    t = p.dtype.type
    lr, mu, wd = t(lr), t(momentum), t(weight_decay)
    n = p.shape[0]
    if momentum == 0.0:
        if g.shape[0] != n:
            raise ValueError("optimizer arrays differ in size")
        for i in range(n):
            d = g[i]
            if weight_decay != 0.0:
                d = d + wd * p[i]
            p[i] = p[i] - lr * d
        return
    _check_sizes(p, g, buf)
    for i in range(n):
        d = g[i]
        if weight_decay != 0.0:
            d = d + wd * p[i]
        b = mu * buf[i] + d
        buf[i] = b
        if nesterov:
            d = d + mu * b
        else:
            d = b
        p[i] = p[i] - lr * d


@njit(cache=True, error_model="numpy")
def adam_step(p, g, m, v, beta1, beta2, eps, step_size, bc2_sqrt, l2, decay):
    """In place: p, m, v. `l2` is Adam's coupled weight decay (added to the gradient),
    `decay` is AdamW's decoupled factor 1 - lr*wd (1.0 for Adam)."""
    t = p.dtype.type
    b1, b2, e = t(beta1), t(beta2), t(eps)
    a1, a2 = t(1.0 - beta1), t(1.0 - beta2)
    s, c2, wd, dec = t(step_size), t(bc2_sqrt), t(l2), t(decay)
    n = p.shape[0]
    _check_sizes(p, g, m)
    _check_sizes(p, g, v)
    for i in range(n):
        x = p[i]
        if decay != 1.0:
            x = x * dec
        d = g[i]
        if l2 != 0.0:
            d = d + wd * x
        mi = b1 * m[i] + a1 * d
        vi = b2 * v[i] + a2 * (d * d)
        m[i] = mi
        v[i] = vi
        p[i] = x - s * (mi / (np.sqrt(vi) / c2 + e))


# The one relaxed flag: `reassoc` lets this sum vectorize (5x faster). It keeps nan and inf
# propagating (no `nnan`/`ninf`) and is deterministic on a given machine; the last bits of the
# sum may differ between CPUs with different vector widths.
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def sum_squares(g):
    """sum(g*g), accumulated in float64 whatever g's dtype."""
    acc = 0.0
    for i in range(g.shape[0]):
        x = np.float64(g[i])
        acc += x * x
    return acc


@njit(cache=True, error_model="numpy")
def scale(g, factor):
    f = g.dtype.type(factor)
    for i in range(g.shape[0]):
        g[i] = g[i] * f
