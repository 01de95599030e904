"""Transformer primitives: layernorm, causal_softmax, split_heads and join_heads, and fused
scaled dot-product attention.

`layernorm(x, eps)` normalises the last axis (no gain or bias: the language applies those);
`causal_softmax(x)` is softmax(causal(x)) over [..., n, n]; `split_heads(x, heads)` and
`join_heads(x, heads)` move between [..., n, H*e] and [..., H, n, e]; `attention(q, k, v,
scale, causal, heads)` is softmax(causal?(q @ k^T * scale)) @ v in one primitive, in each of
`heads` heads.
The row work runs in the Numba kernels of kernels/attention.py (float64 sums, see there why);
products go to BLAS through np.matmul on the stacked matrices.

Why fuse: at the reference workload (q, k, v [32, 4, 64, 16] float32, causal, forward +
backward; 2 cores) attention takes 2.3-2.4 ms against 2.7-2.9 ms for the unfused chain of
primitives (matmul, transpose, mul, causal_softmax, matmul, then their backward rules); not
causal, 3.1-3.3 ms against 3.8 ms with softmax. It saves the two passes of the scale over S
(folded into the softmax kernels) and copies k^T and v^T before their products (below).
"""

from __future__ import annotations

import numpy as np

from ..kernels import attention as K
from . import register


def rows(x: np.ndarray) -> np.ndarray:
    """x folded to C-contiguous [N, K] (a view when x is already contiguous)."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _t(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _tc(x: np.ndarray) -> np.ndarray:
    """x^T as a contiguous copy: np.matmul on the stacked [64, 16] matrices of the reference
    attention is faster on it than on the transposed view (0.19 against 0.25 ms)."""
    return np.ascontiguousarray(_t(x))


def masked_softmax(x: np.ndarray, scale: float, causal: bool) -> np.ndarray:
    """Softmax of scale * x along the last axis, (i, j > i) masked to 0 when causal. Numba does
    the row work (maxima, shifts, float64 sums); the exp between is one NumPy call over the
    whole array: NumPy's exp is SIMD, Numba's (no SVML) scalar libm. On the reference
    attention's S [32, 4, 64, 64] float32, causal, this takes 0.81-0.86 ms, against 1.77 ms for
    one Numba kernel with math.exp inside (1.2-1.4 ms with a vectorisable float32 exp
    polynomial instead) and 1.63 ms for a NumPy chain (its reductions over rows of 64 are
    slow)."""
    z = K.masked_shift(rows(x), float(scale), bool(causal))
    np.exp(z, out=z)
    K.masked_normalise(z, bool(causal))
    return z.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# layernorm(x, eps): [..., d] -> (x - mean) / sqrt(var + eps) over the last axis.
# Saves rstd = 1 / sqrt(var + eps) per row [...]; backward: rstd (g - mean(g) - y mean(g y)).
# layernorm(x, gain, bias, eps) is what fuse.py makes of LayerNorm's `g * normalize(x) + b`:
# one pass instead of three, saving (rstd, the normalised x).


def layernorm_shape(x: tuple, *affine: tuple, eps: float = 1e-5) -> tuple:
    if len(x) < 1 or x[-1] == 0:
        raise ValueError(f"layernorm: needs a non-empty last axis, got {list(x)}")
    if affine and (len(affine) != 2 or any(tuple(a) != (x[-1],) for a in affine)):
        raise ValueError(f"layernorm: the gain and bias must be [{x[-1]}], got "
                         f"{[list(a) for a in affine]}")
    return tuple(x)


def layernorm_forward(x: np.ndarray, *affine: np.ndarray, eps: float = 1e-5):
    if affine:
        out, xhat, rstd = K.layernorm_affine_rows(rows(x), affine[0], affine[1], float(eps))
        return out.reshape(x.shape), (rstd, xhat)
    out, rstd = K.layernorm_rows(rows(x), float(eps))
    return out.reshape(x.shape), rstd.reshape(x.shape[:-1])


def layernorm_backward(g, out, inputs, wants, *, saved, eps=1e-5):
    if not any(wants):
        return (None,) * len(inputs)
    if saved is None:
        out, saved = layernorm_forward(*inputs, eps=eps)
    if len(inputs) == 3:
        (rstd, xhat), gain = saved, inputs[1]
    else:
        rstd, xhat = np.ascontiguousarray(saved).reshape(-1), rows(out)
        gain = np.ones(out.shape[-1], dtype=out.dtype)
    grads = K.layernorm_rows_vjp(rows(g), xhat, rstd, gain)
    grads = (grads[0].reshape(out.shape),) + grads[1:len(inputs)]
    return tuple(d if w else None for d, w in zip(grads, wants, strict=True))


register("layernorm", shape=layernorm_shape, forward=layernorm_forward,
         backward=layernorm_backward, smooth=True, saves=True)


# ---------------------------------------------------------------------------------------------
# causal_softmax(x): [..., n, n] -> softmax over the last axis of x with (i, j > i) masked out


def causal_softmax_shape(x: tuple) -> tuple:
    if len(x) < 2 or x[-1] != x[-2] or x[-1] == 0:
        raise ValueError(f"causal_softmax: needs [..., n, n] with n >= 1, got {list(x)}")
    return tuple(x)


def causal_softmax_forward(x: np.ndarray) -> np.ndarray:
    return masked_softmax(x, 1.0, True)


def causal_softmax_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    return (K.masked_softmax_vjp(rows(g), rows(out), 1.0, True).reshape(out.shape),)


register("causal_softmax", shape=causal_softmax_shape, forward=causal_softmax_forward,
         backward=causal_softmax_backward, smooth=True)


# ---------------------------------------------------------------------------------------------
# split_heads(x, heads): [..., n, H*e] -> [..., H, n, e], each vector cut into H parts, the
# heads first (a view: a reshape and a swap of axes); join_heads(x, heads) the way back, a
# copy. Each one's backward is the other. The heads are a parameter, not a shape, so that
# fuse.py can fold join_heads(attention(split_heads(q), ...)) into attention(q, ...; heads).


def split_heads_shape(x: tuple, *, heads: int) -> tuple:
    x = tuple(x)
    if len(x) < 2 or heads < 1 or x[-1] % heads:
        raise ValueError(f"split_heads: {heads} heads need [..., n, d] with d a multiple of "
                         f"them, got {list(x)}")
    return x[:-2] + (heads, x[-2], x[-1] // heads)


def join_heads_shape(x: tuple, *, heads: int) -> tuple:
    x = tuple(x)
    if len(x) < 3 or x[-3] != heads:
        raise ValueError(f"join_heads: needs [..., {heads}, n, e] ({heads} heads), got {list(x)}")
    return x[:-3] + (x[-2], heads * x[-1])


def split_heads_forward(x: np.ndarray, *, heads: int) -> np.ndarray:
    return _heads(x, heads)


def join_heads_forward(x: np.ndarray, *, heads: int) -> np.ndarray:
    return np.swapaxes(x, -3, -2).reshape(x.shape[:-3] + (x.shape[-2], heads * x.shape[-1]))


def split_heads_backward(g, out, inputs, wants, *, heads):
    return (join_heads_forward(g, heads=heads) if wants[0] else None,)


def join_heads_backward(g, out, inputs, wants, *, heads):
    return (split_heads_forward(g, heads=heads) if wants[0] else None,)


register("split_heads", shape=split_heads_shape, forward=split_heads_forward,
         backward=split_heads_backward, smooth=True)
register("join_heads", shape=join_heads_shape, forward=join_heads_forward,
         backward=join_heads_backward, smooth=True)


# ---------------------------------------------------------------------------------------------
# attention(q, k, v, scale, causal, heads): q [..., n, H*e], k [..., m, H*e], v [..., m, H*f]
# -> [..., n, H*f]; head h is columns h*e:(h+1)*e of q and k (h*f:(h+1)*f of v and out), so
# heads = 1 is plain attention and heads = H is join_heads(attention(split_heads(q, k, v))),
# which fuse.py folds in: the heads are strided views here, which np.matmul hands to BLAS as
# they are, instead of the four transposed copies (and their backward) around each attention.
# P = softmax rows of S = q k^T scale (causal: j > i masked), out = P v; saves P [..., H, n, m].
# Backward: dv = P^T g; dS = scale P (g v^T - rowsum(g v^T P)) (one kernel, the scale folded
# in); dq = dS k, dk = dS^T q.


def attention_shape(q: tuple, k: tuple, v: tuple, *, scale: float, causal: bool,
                    heads: int = 1) -> tuple:
    q, k, v = tuple(q), tuple(k), tuple(v)
    if (len(q) < 2 or len(k) != len(q) or len(v) != len(q) or q[:-2] != k[:-2]
            or q[:-2] != v[:-2] or q[-1] != k[-1] or k[-2] != v[-2] or k[-2] == 0):
        raise ValueError(f"attention: expects q [..., n, e], k [..., m, e], v [..., m, f] with "
                         f"the same leading axes and m >= 1, got q {list(q)}, k {list(k)}, "
                         f"v {list(v)}")
    if causal and q[-2] != k[-2]:
        raise ValueError(f"attention: causal needs as many queries as keys (n == m), got "
                         f"q {list(q)} and k {list(k)}")
    if heads < 1 or q[-1] % heads or v[-1] % heads:
        raise ValueError(f"attention: {heads} heads do not divide q {list(q)} and v {list(v)}")
    return q[:-1] + v[-1:]


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[..., n, H*e] -> the view [..., H, n, e]."""
    return np.swapaxes(x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads)), -3, -2)


def _matmul_into(a: np.ndarray, b: np.ndarray, shape: tuple, heads: int) -> np.ndarray:
    """a @ b ([..., H, n, f]) written straight into a new [..., n, H*f] array."""
    out = np.empty(shape, dtype=a.dtype)
    np.matmul(a, b, out=_heads(out, heads))
    return out


def _probs(q4, k4, scale, causal):
    return masked_softmax(np.matmul(q4, _tc(k4)), scale, causal)


def attention_forward(q, k, v, *, scale: float, causal: bool, heads: int = 1):
    p = _probs(_heads(q, heads), _heads(k, heads), scale, causal)
    return _matmul_into(p, _heads(v, heads), q.shape[:-1] + v.shape[-1:], heads), p


def attention_backward(g, out, inputs, wants, *, saved, scale, causal, heads=1):
    q, k, v = inputs
    q4, k4, v4, g4 = (_heads(x, heads) for x in (q, k, v, g))
    p = _probs(q4, k4, scale, causal) if saved is None else saved
    dv = _matmul_into(_t(p), g4, v.shape, heads) if wants[2] else None
    dq = dk = None
    if wants[0] or wants[1]:
        dp = np.matmul(g4, _tc(v4))
        ds = K.masked_softmax_vjp(rows(dp), rows(p), float(scale), bool(causal))
        ds = ds.reshape(p.shape)
        dq = _matmul_into(ds, k4, q.shape, heads) if wants[0] else None
        dk = _matmul_into(_t(ds), q4, k.shape, heads) if wants[1] else None
    return dq, dk, dv


register("attention", shape=attention_shape, forward=attention_forward,
         backward=attention_backward, smooth=True, saves=True)
