"""Sequence kernels: the embedding scatter-add, and the SimpleRNN / LSTM cells of one time step.

The recurrences (driven by primitives/sequence.py) make two calls per time step: one BLAS GEMM
through NumPy (h_{t-1} @ U^T forward, d_t @ U backward, into a preallocated buffer) and one
cell kernel below, which does the whole step's elementwise work for the batch (the LSTM's five
activations, cell and output; backward, all four gate gradients). Python runs once per step,
not once per step per op; a kernel call costs about 0.3 us.

Measured on this machine (2 cores, float32) at rnn_charlm's size B=32, n=64, h=128, whole
sequence: rnn forward 0.71-0.97 ms, backward (dxp and dU) 1.05-1.12 ms; lstm forward 3.8-4.3
ms, backward 3.7-4.2 ms; at B=1 (generation) rnn 0.13 / 0.15 ms, lstm 0.35 / 0.29 ms. A
whole training step of programs/charlm_rnn.dp takes 5.6-5.8 ms in benchmarks/rnn_charlm.py,
against 6.3-6.7 ms for PyTorch's nn.RNN and 8.7-9.1 ms for its hand-written cell loop. The
alternatives measured:
- The whole time loop inside one Numba function, with np.dot (BLAS through SciPy's bindings):
  alone, rnn forward 0.88-0.97 ms and backward 1.0-1.1 ms; but SciPy's OpenBLAS is a second
  thread pool next to NumPy's, and in a training step their spinning workers fought over the
  two cores: 16 ms per step. With SciPy's pool cut to one thread, a hand-built rnn_charlm step
  took 5.35 ms against 4.63 ms for this design. It also needs SciPy, which dp does not depend
  on. It wins only at B=1 (0.06 ms forward).
- NumPy calls alone (np.matmul, np.add, np.tanh with out=): rnn forward 0.67 ms (NumPy's float32
  tanh is 16-wide SIMD), backward 1.39 ms; the LSTM needs about 15 calls per step (forward 6.3
  ms against 4 ms).
- The GEMM on the transposed view U.T: 13-16 us per step against 8.7 us on a contiguous copy
  of U^T, made once per sequence.
- dU is one GEMM over the whole sequence after the loop, not a small one per step.

Activations. In float32 the cells use `tanh_` and `sigmoid_` below: exp by a Cephes polynomial
scaled by integer powers of two, so that LLVM vectorises them (Numba's math.tanh and math.exp
are scalar libm calls, no SVML here: with them the rnn forward took 5.2 ms). Over every 7th
float32 in [-90, 90], tanh is within 1.4 ulp and sigmoid within 2.5 ulp of the exact value;
tanh(+-inf) = +-1, sigmoid(inf) = 1, and NaN propagates. sigmoid(x) below -86 stays at
sigmoid(-86) = 4.4e-38 (exp's argument is clamped). Eigen's float32 rational tanh costs a third
as much but is 4-7 ulp off. In float64 (the gradient checks) they are libm's tanh and a stable
sigmoid.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

# ---------------------------------------------------------------------------------------------
# Activations: a vectorisable float32 exp-based tanh and sigmoid; libm in float64

_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)            # Cody-Waite split of ln 2 (Cephes expf)
_LN2_LO = _F(-2.12194440e-4)
_E1, _E2, _E3 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_E4, _E5, _E6 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_T1, _T2, _T3 = _F(-5.70498872745e-3), _F(2.06390887954e-2), _F(-5.37397155531e-2)
_T4, _T5 = _F(1.33314422036e-1), _F(-3.33332819422e-1)   # Cephes tanhf, |x| < 0.625
_HALF, _ONE, _TWO = _F(0.5), _F(1.0), _F(2.0)
_TANH_MAX = _F(20.0)     # tanh(x) for |x| >= 10 rounds to +-1: 1 - 2 / (exp(20) + 1)
_SIGMOID_MAX = _F(86.0)  # sigmoid(-86) = 4.4e-38, near the smallest normal float32
_SMALL = _F(0.625)


@njit(cache=True, error_model="numpy")
def _exp32(y, ymax):
    """exp(y) for float32 y in [0, ymax], ymax <= 86 (or NaN): exp(r) * 2^k with |r| <= ln2/2,
    2^k as two integer shifts (k <= 124). k comes from a NaN-free copy of y (a NaN cast to an
    integer is undefined); NaN reaches the result through r."""
    yk = y if y < ymax else ymax  # noqa: FURB136 (NaN -> ymax on purpose)
    k = np.int64(yk * _LOG2E + _HALF)
    kf = _F(k)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    p = ((((_E1 * r + _E2) * r + _E3) * r + _E4) * r + _E5) * r + _E6
    p = (p * r) * r + r + _ONE
    k1 = k >> 1
    return p * _F(np.int64(1) << k1) * _F(np.int64(1) << (k - k1))


@njit(cache=True, error_model="numpy")
def _tanh32(x):
    """Cephes' odd polynomial for |x| < 0.625, else sign(x) (1 - 2 / (exp(2|x|) + 1))."""
    a = abs(x)
    y = a * _TWO
    if y > _TANH_MAX:  # noqa: PLR1730 (an if, not min(): NaN stays NaN)
        y = _TANH_MAX
    big = _ONE - _TWO / (_exp32(y, _TANH_MAX) + _ONE)
    z = x * x
    small = ((((_T1 * z + _T2) * z + _T3) * z + _T4) * z + _T5) * z * x + x
    big = big if x > 0 else -big
    return small if a < _SMALL else big


@njit(cache=True, error_model="numpy")
def _sigmoid32(x):
    """sigmoid(-|x|) = 1 / (1 + e), sigmoid(|x|) = e / (1 + e) with e = exp(|x|)."""
    y = abs(x)
    if y > _SIGMOID_MAX:  # noqa: PLR1730 (NaN stays NaN)
        y = _SIGMOID_MAX
    e = _exp32(y, _SIGMOID_MAX)
    lo = _ONE / (e + _ONE)
    return lo if x < 0 else e * lo


@njit(cache=True, error_model="numpy")
def _sigmoid64(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def tanh_(x):
    """tanh in the cell kernels: _tanh32 for float32, libm otherwise. Numba compiles the
    @overload below into the kernels; this body runs only under NUMBA_DISABLE_JIT."""
    return _tanh32(x) if isinstance(x, np.float32) else math.tanh(x)


def sigmoid_(x):
    """The logistic sigmoid in the cell kernels, as tanh_."""
    return _sigmoid32(x) if isinstance(x, np.float32) else _sigmoid64(x)


@overload(tanh_)
def _tanh_impl(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


@overload(sigmoid_)
def _sigmoid_impl(x):
    if x == types.float32:
        return lambda x: _sigmoid32(x)
    return lambda x: _sigmoid64(x)


# ---------------------------------------------------------------------------------------------
# Embedding: the scatter-add of the gradient rows into the table's gradient


@njit(cache=True, error_model="numpy")
def embed_grad(ids, g, dtable):
    """dtable [V, d] = sum of the rows g[i] with ids[i] = v, for every v (zero for the others).
    A counting sort groups the positions of each id (in order), so every row is summed once, in
    float64, and written once. ids are trusted to lie in [0, V)."""
    nv, d = dtable.shape
    n = ids.shape[0]
    start = np.zeros(nv + 1, np.int64)
    for i in range(n):
        start[ids[i] + 1] += 1
    for v in range(nv):
        start[v + 1] += start[v]
    fill = start[:nv].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[ids[i]]] = i
        fill[ids[i]] += 1
    acc = np.empty(d)
    for v in range(nv):
        acc[:] = 0.0
        for k in range(start[v], start[v + 1]):
            i = order[k]
            for j in range(d):
                acc[j] += g[i, j]
        for j in range(d):
            dtable[v, j] = acc[j]


# ---------------------------------------------------------------------------------------------
# The cells: one time step t of the elementwise work, for the whole batch, between two GEMMs
# made by the caller (primitives/sequence.py). They go row by row (one batch entry) over 1-D
# contiguous views, each loop touching at most four arrays: LLVM vectorises a loop over arrays
# it cannot prove disjoint only behind a few runtime overlap checks, and a fused LSTM step
# touching nine arrays stayed scalar (elementwise work 8.8 ms instead of 1.8 ms at rnn_charlm's
# size).
# SimpleRNN: h_t = tanh(h_{t-1} @ U^T + xp[:, t])


@njit(cache=True, error_model="numpy")
def rnn_cell(pre, xp, hs, t):
    """hs[:, t] = tanh(pre + xp[:, t]), pre = h_{t-1} @ U^T [B, h]."""
    nb, h = pre.shape
    for b in range(nb):
        z, x, y = pre[b], xp[b, t], hs[b, t]
        for j in range(h):
            y[j] = tanh_(z[j] + x[j])


@njit(cache=True, error_model="numpy")
def rnn_cell_grad(g, hs, dh, dxp, t):
    """dxp[:, t] = (g[:, t] + dh) * (1 - hs[:, t]^2): the gradient of step t's pre-activation,
    dh = dxp[:, t + 1] @ U the gradient reaching h_t through step t + 1 (zero at the end)."""
    nb, h = dh.shape
    one = g.dtype.type(1)
    for b in range(nb):
        d, gt, y, c = dxp[b, t], g[b, t], hs[b, t], dh[b]
        for j in range(h):
            d[j] = (gt[j] + c[j]) * (one - y[j] * y[j])


# ---------------------------------------------------------------------------------------------
# LSTM (PyTorch's layout): gates = xp[:, t] + h_{t-1} @ U^T, split i, f, g, o (each h wide);
# c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g); h_t = sigmoid(o) tanh(c_t)


@njit(cache=True, error_model="numpy")
def lstm_cell(pre, xp, hs, acts, cs, tcs, c0, t):
    """Step t from pre = h_{t-1} @ U^T [B, 4h]: hs[:, t], and for the backward the activated
    gates acts[:, t] (i, f, g, o), the cell cs[:, t] and tcs[:, t] = tanh(c_t); c0 is a zero
    row, c_{-1}."""
    nb, h4 = pre.shape
    h = h4 // 4
    for b in range(nb):
        z, x, a = pre[b], xp[b, t], acts[b, t]
        for j in range(2 * h):
            a[j] = sigmoid_(z[j] + x[j])
        for j in range(2 * h, 3 * h):
            a[j] = tanh_(z[j] + x[j])
        for j in range(3 * h, h4):
            a[j] = sigmoid_(z[j] + x[j])
        cp = cs[b, t - 1] if t > 0 else c0
        c, tc, y = cs[b, t], tcs[b, t], hs[b, t]
        for j in range(h):
            c[j] = a[h + j] * cp[j] + a[j] * a[2 * h + j]
        for j in range(h):
            tc[j] = tanh_(c[j])
        for j in range(h):
            y[j] = a[3 * h + j] * tc[j]


@njit(cache=True, error_model="numpy")
def lstm_cell_grad(g, acts, cs, tcs, c0, dh, dc, dxp, t):
    """dxp[:, t]: the gradient of step t's gates (before their activations). dh = dxp[:, t + 1]
    @ U reaches h_t through step t + 1, dc reaches c_t through c_{t+1} (both zero at the end);
    dh is used up and dc becomes the gradient reaching c_{t-1}."""
    nb, h = dh.shape
    one = g.dtype.type(1)
    for b in range(nb):
        a, tc, gt, z = acts[b, t], tcs[b, t], g[b, t], dxp[b, t]
        cp = cs[b, t - 1] if t > 0 else c0
        dht, dct = dh[b], dc[b]
        for j in range(h):
            dht[j] += gt[j]
        for j in range(h):
            dct[j] += dht[j] * a[3 * h + j] * (one - tc[j] * tc[j])
        for j in range(h):
            o = a[3 * h + j]
            z[3 * h + j] = dht[j] * tc[j] * o * (one - o)
        for j in range(h):
            i = a[j]
            z[j] = dct[j] * a[2 * h + j] * i * (one - i)
        for j in range(h):
            f = a[h + j]
            z[h + j] = dct[j] * cp[j] * f * (one - f)
        for j in range(h):
            gg = a[2 * h + j]
            z[2 * h + j] = dct[j] * a[j] * (one - gg * gg)
        for j in range(h):
            dct[j] *= a[h + j]
