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

Activations: `tanh_` and `sigmoid_` of kernels/vmath.py, polynomials that LLVM vectorises in
float32 (Numba's math.tanh and math.exp are scalar libm calls, no SVML here: with them the rnn
forward took 5.2 ms), libm in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vmath import sigmoid_, tanh_

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
