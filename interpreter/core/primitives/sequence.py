"""Sequence primitives: embed (a token's row of a table), and SimpleRNN / LSTM along a sequence.

`embed(ids, table)` gathers rows with NumPy and scatter-adds the gradient with a Numba kernel
(each row summed in float64; repeated ids accumulate). ids are integers, checked to lie in
[0, V) before anything reads the table (an id out of range is an error of kind "data" that is
also a ValueError), and get no gradient.

`rnn_scan(xp, U)` and `lstm_scan(xp, U)` run a recurrent cell along the whole sequence from a
zero state, given the input projections xp (x_t V^T + b for every t, one GEMM made by the
lowering). Each time step is one NumPy GEMM into a preallocated buffer and one Numba call that
does the step's elementwise work for the whole batch, forward and backward (backpropagation
through time); dU, a sum over all steps, is one GEMM after the loop. kernels/sequence.py has
the measurements behind this design. rnn_scan's backward needs only its output hs; lstm_scan
saves its activated gates, its cells and their tanh.
"""

from __future__ import annotations

import numpy as np

from dp.dsl.errors import DpError

from ..kernels import sequence as K
from . import register


class IdOutOfRange(DpError, ValueError):
    """A token id outside the embedding table: bad data (kind "data"), and a ValueError."""

    def __init__(self, message: str):
        super().__init__("data", message)


# ---------------------------------------------------------------------------------------------
# embed(ids, table): ids [B, ...] integer, table [V, d] -> [B, ..., d] = table[ids]


def embed_shape(ids: tuple, table: tuple) -> tuple:
    if len(table) != 2:
        raise ValueError(f"embed: the table must be a matrix [V, d], got {list(table)}")
    return tuple(ids) + (table[1],)


def _ids(ids: np.ndarray, nv: int) -> np.ndarray:
    """ids as a flat int64 array, checked to lie in [0, nv): a bad id must be an error, never
    an out-of-bounds read (or a negative index that wraps around)."""
    if ids.dtype.kind not in "iu":
        raise ValueError(f"embed: token ids must be integers, got dtype {ids.dtype}")
    flat = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    # One reduction for both bounds: viewed as unsigned, a negative id is huge.
    if flat.size and flat.view(np.uint64).max() >= nv:
        bad = int(flat[(flat < 0) | (flat >= nv)][0])
        raise IdOutOfRange(f"token id {bad} is out of range for an embedding table of {nv} "
                           f"rows (expected 0..{nv - 1})")
    return flat


def embed_forward(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    flat = _ids(ids, table.shape[0])
    return np.take(table, flat, axis=0).reshape(ids.shape + table.shape[1:])


def embed_backward(g, out, inputs, wants):
    if not wants[1]:
        return None, None
    ids, table = inputs
    flat = _ids(ids, table.shape[0])
    dtable = np.empty(table.shape, dtype=table.dtype)
    K.embed_grad(flat, np.ascontiguousarray(g).reshape(len(flat), table.shape[1]), dtable)
    return None, dtable


register("embed", shape=embed_shape, forward=embed_forward, backward=embed_backward,
         smooth=True, integer_inputs=(0,))


# ---------------------------------------------------------------------------------------------
# rnn_scan(xp, U): xp [B, n, h], U [h, h] -> hs [B, n, h], h_t = tanh(h_{t-1} U^T + xp[:, t])


def rnn_scan_shape(xp: tuple, u: tuple) -> tuple:
    if len(xp) != 3 or len(u) != 2:
        raise ValueError(f"rnn_scan: expects xp [B, n, h] and U [h, h], got {list(xp)} and "
                         f"{list(u)}")
    if tuple(u) != (xp[2], xp[2]):
        raise ValueError(f"rnn_scan: U must be [h, h] = [{xp[2]}, {xp[2]}] for xp {list(xp)}, "
                         f"got {list(u)}")
    return tuple(xp)


def rnn_scan_forward(xp: np.ndarray, u: np.ndarray) -> np.ndarray:
    xp = np.ascontiguousarray(xp)
    nb, n, h = xp.shape
    hs = np.empty(xp.shape, dtype=xp.dtype)
    ut = np.ascontiguousarray(u.T, dtype=xp.dtype)  # BLAS is faster on it than on a view
    pre = np.zeros((nb, h), dtype=xp.dtype)         # h_{-1} = 0: no product at t = 0
    matmul, cell = np.matmul, K.rnn_cell
    for t in range(n):
        if t:
            matmul(hs[:, t - 1], ut, out=pre)
        cell(pre, xp, hs, t)
    return hs


def _du(d: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """dU = sum over b and t >= 1 of d[b, t]^T hs[b, t - 1] (d: gate gradients [B, n, k]).

    One GEMM over the flattened rows pairs every row with the one before it, which is right
    for t >= 1 and pairs (b, 0) with (b - 1, n - 1) across sequences; a small GEMM over those
    B - 1 pairs takes them back out. No shifted copy of d or hs is made."""
    nb, n, k = d.shape
    h = hs.shape[2]
    if n < 2:
        return np.zeros((k, h), dtype=d.dtype)
    rows = nb * n
    du = d.reshape(rows, k)[1:].T @ hs.reshape(rows, h)[:-1]
    if nb > 1:
        du -= d[1:, 0].T @ hs[:-1, n - 1]
    return du


def rnn_scan_backward(g, out, inputs, wants):
    """Backpropagation through time: d_t = (g[:, t] + d_{t+1} @ U) * (1 - h_t^2) is the
    gradient of step t's pre-activation, dxp = d and dU = sum_t d_t^T h_{t-1}."""
    if not (wants[0] or wants[1]):
        return None, None
    u = inputs[1]
    hs = np.ascontiguousarray(out)
    g = np.ascontiguousarray(g, dtype=hs.dtype)
    u = np.ascontiguousarray(u, dtype=hs.dtype)
    nb, n, h = hs.shape
    dxp = np.empty(hs.shape, dtype=hs.dtype)
    dh = np.zeros((nb, h), dtype=hs.dtype)
    matmul, cell = np.matmul, K.rnn_cell_grad
    for t in range(n - 1, -1, -1):
        cell(g, hs, dh, dxp, t)
        if t:
            matmul(dxp[:, t], u, out=dh)
    return (dxp if wants[0] else None), (_du(dxp, hs) if wants[1] else None)


register("rnn_scan", shape=rnn_scan_shape, forward=rnn_scan_forward, backward=rnn_scan_backward,
         smooth=True)


# ---------------------------------------------------------------------------------------------
# lstm_scan(xp, U): xp [B, n, 4h], U [4h, h] -> hs [B, n, h], PyTorch's gate order i, f, g, o


def lstm_scan_shape(xp: tuple, u: tuple) -> tuple:
    if len(xp) != 3 or len(u) != 2:
        raise ValueError(f"lstm_scan: expects xp [B, n, 4h] and U [4h, h], got {list(xp)} and "
                         f"{list(u)}")
    h = u[1]
    if u[0] != 4 * h or xp[2] != 4 * h:
        raise ValueError(f"lstm_scan: U must be [4h, h] and xp [B, n, 4h] for the same h, got "
                         f"xp {list(xp)} and U {list(u)}")
    return (xp[0], xp[1], h)


def lstm_scan_forward(xp: np.ndarray, u: np.ndarray):
    """(hs, saved): saved = (activated gates [B, n, 4h], cells [B, n, h], tanh(cells))."""
    xp = np.ascontiguousarray(xp)
    nb, n, h4 = xp.shape
    h = h4 // 4
    hs, cs, tcs = (np.empty((nb, n, h), dtype=xp.dtype) for _ in range(3))
    acts = np.empty(xp.shape, dtype=xp.dtype)
    ut = np.ascontiguousarray(u.T, dtype=xp.dtype)
    pre = np.zeros((nb, h4), dtype=xp.dtype)        # h_{-1} = 0: no product at t = 0
    c0 = np.zeros(h, dtype=xp.dtype)                # c_{-1}
    matmul, cell = np.matmul, K.lstm_cell
    for t in range(n):
        if t:
            matmul(hs[:, t - 1], ut, out=pre)
        cell(pre, xp, hs, acts, cs, tcs, c0, t)
    return hs, (acts, cs, tcs)


def lstm_scan_backward(g, out, inputs, wants, *, saved):
    """Backpropagation through time; dxp holds the gradients of the gates before their
    activations, dU = sum_t dxp[:, t]^T h_{t-1}. Without `saved`, the forward runs again."""
    if not (wants[0] or wants[1]):
        return None, None
    xp, u = inputs
    if saved is None:
        out, saved = lstm_scan_forward(xp, u)
    acts, cs, tcs = saved
    hs = np.ascontiguousarray(out)
    g = np.ascontiguousarray(g, dtype=hs.dtype)
    u = np.ascontiguousarray(u, dtype=hs.dtype)
    nb, n, h = hs.shape
    dxp = np.empty(acts.shape, dtype=hs.dtype)
    dh = np.zeros((nb, h), dtype=hs.dtype)
    dc = np.zeros((nb, h), dtype=hs.dtype)
    c0 = np.zeros(h, dtype=hs.dtype)
    matmul, cell = np.matmul, K.lstm_cell_grad
    for t in range(n - 1, -1, -1):
        cell(g, acts, cs, tcs, c0, dh, dc, dxp, t)
        if t:
            matmul(dxp[:, t], u, out=dh)
    return (dxp if wants[0] else None), (_du(dxp, hs) if wants[1] else None)


register("lstm_scan", shape=lstm_scan_shape, forward=lstm_scan_forward,
         backward=lstm_scan_backward, smooth=True, saves=True)


# ---------------------------------------------------------------------------------------------
# embed_linear(ids, E, W) or embed_linear(ids, E, W, b): ids [B, ...], E [V, d], W [m, d],
# b [m] -> [B, ..., m] = E[ids] @ W.T (+ b). fuse.py makes it of `linear(embed(ids, E), W, b)`
# (a language model's embedding and its next layer's input projection). Since
# E[ids] @ W.T + b = (E @ W.T + b)[ids], when there are at least as many ids as rows in E the
# product runs once on the table (V rows) instead of once per id; the backward then scatter-adds
# g into dT [V, m] and takes dE = dT @ W, dW = dT.T @ E, db = dT.sum(0). With fewer ids (batch-1
# generation) it gathers first, as the unfused pair did. The choice is made per call, so one
# plan serves every batch size (the ONNX export compares plans lowered for two).


def embed_linear_shape(ids: tuple, table: tuple, w: tuple, *b: tuple) -> tuple:
    if len(table) != 2 or len(w) != 2 or table[1] != w[1]:
        raise ValueError(f"embed_linear: expects E [V, d] and W [m, d], got {list(table)} and "
                         f"{list(w)}")
    if len(b) > 1 or b and tuple(b[0]) != (w[0],):
        raise ValueError(f"embed_linear: the bias must be [{w[0]}] for W {list(w)}, got "
                         f"{[list(s) for s in b]}")
    return tuple(ids) + (w[0],)


def _on_table(n: int, nv: int) -> bool:
    """Whether the product pays on the table's V rows rather than on the n gathered ones."""
    return n >= nv


def embed_linear_forward(ids: np.ndarray, table: np.ndarray, w: np.ndarray, *b: np.ndarray):
    flat = _ids(ids, table.shape[0])
    rows = table if _on_table(len(flat), len(table)) else np.take(table, flat, axis=0)
    out = rows @ w.T
    if b:
        out += b[0]
    if rows is table:
        out = np.take(out, flat, axis=0)
    return out.reshape(ids.shape + (w.shape[0],))


def embed_linear_backward(g, out, inputs, wants):
    ids, table, w = inputs[:3]
    nb = len(inputs) - 3
    if not any(wants[1:]):
        return (None,) * len(inputs)
    flat = _ids(ids, table.shape[0])
    g2 = np.ascontiguousarray(g, dtype=table.dtype).reshape(len(flat), w.shape[0])
    if _on_table(len(flat), len(table)):
        dt = np.empty((table.shape[0], w.shape[0]), dtype=table.dtype)
        K.embed_grad(flat, g2, dt)  # dT: the rows of g summed per id
        de = dt @ w if wants[1] else None
        dw = dt.T @ table if wants[2] else None
        db = dt.sum(axis=0) if nb and wants[3] else None
    else:
        de = None
        if wants[1]:
            de = np.empty(table.shape, dtype=table.dtype)
            K.embed_grad(flat, np.ascontiguousarray(g2 @ w), de)
        dw = g2.T @ np.take(table, flat, axis=0) if wants[2] else None
        db = g2.sum(axis=0) if nb and wants[3] else None
    return (None, de, dw) + ((db,) if nb else ())


register("embed_linear", shape=embed_linear_shape, forward=embed_linear_forward,
         backward=embed_linear_backward, smooth=True, integer_inputs=(0,))
