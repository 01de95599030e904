"""embed, rnn_scan and lstm_scan against plain NumPy references, and their edges.

test_gradcheck holds their backward rules to central differences; here: the forward of both
recurrences against a step-by-step float64 loop written from the equations (PyTorch's for the
LSTM), their backward against backpropagation through time written the same way (at sizes the
gradient checks do not reach), the embedding's gather and scatter-add against NumPy's fancy
indexing and np.add.at, ids out of range, every shape-rule error, float32 against float64, the
float32 activations' accuracy, NaN, empty batches and sequences, unwanted gradients, and an
LSTM plan (a saving primitive) run through the Executable.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from dp.dsl.errors import DpError
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.kernels.sequence import sigmoid_, tanh_
from dp.interpreter.core.plan import ParamSpec, Plan, typecheck_plan
from dp.interpreter.core.primitives import apply_backward, apply_forward, get
from gradcheck import check_grads, plan_loss_and_vjp

# (B, n, h): batch 1, one step, width 1, odd sizes, and rnn_charlm's B=32, n=64, h=128.
SIZES = [(3, 5, 4), (1, 7, 3), (2, 1, 5), (4, 9, 1), (5, 12, 7), (32, 64, 128)]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_rnn(xp, u):
    """hs of h_t = tanh(h_{t-1} @ U^T + xp[:, t]), h_{-1} = 0, one step at a time."""
    nb, n, h = xp.shape
    hs, hp = np.zeros((nb, n, h)), np.zeros((nb, h))
    for t in range(n):
        hp = np.tanh(hp @ u.T + xp[:, t])
        hs[:, t] = hp
    return hs


def ref_rnn_grads(g, xp, u):
    """(dxp, dU) of <g, ref_rnn(xp, U)> by backpropagation through time, dU summed per step."""
    hs = ref_rnn(xp, u)
    nb, n, h = xp.shape
    dxp, du, dh = np.zeros_like(xp), np.zeros_like(u), np.zeros((nb, h))
    for t in range(n - 1, -1, -1):
        d = (g[:, t] + dh) * (1 - hs[:, t] ** 2)
        dxp[:, t] = d
        hprev = hs[:, t - 1] if t > 0 else np.zeros((nb, h))
        du += d.T @ hprev
        dh = d @ u
    return dxp, du


def ref_lstm(xp, u):
    """(hs, gates, cells) of PyTorch's LSTM from zero h and c: gates = xp[:, t] + h @ U^T split
    i, f, g, o; c = sigmoid(f) c + sigmoid(i) tanh(g); h = sigmoid(o) tanh(c)."""
    nb, n, h4 = xp.shape
    h = h4 // 4
    hs, cs = np.zeros((nb, n, h)), np.zeros((nb, n, h))
    acts = np.zeros((nb, n, h4))
    hp, c = np.zeros((nb, h)), np.zeros((nb, h))
    for t in range(n):
        z = xp[:, t] + hp @ u.T
        i, f = sigmoid(z[:, :h]), sigmoid(z[:, h:2 * h])
        gg, o = np.tanh(z[:, 2 * h:3 * h]), sigmoid(z[:, 3 * h:])
        c = f * c + i * gg
        hp = o * np.tanh(c)
        hs[:, t], cs[:, t], acts[:, t] = hp, c, np.concatenate([i, f, gg, o], axis=1)
    return hs, acts, cs


def ref_lstm_grads(g, xp, u):
    """(dxp, dU) of <g, ref_lstm(xp, U)> by backpropagation through time."""
    hs, acts, cs = ref_lstm(xp, u)
    nb, n, h4 = xp.shape
    h = h4 // 4
    dxp, du = np.zeros_like(xp), np.zeros_like(u)
    dh, dc = np.zeros((nb, h)), np.zeros((nb, h))
    for t in range(n - 1, -1, -1):
        i, f, gg, o = (acts[:, t, k * h:(k + 1) * h] for k in range(4))
        tc = np.tanh(cs[:, t])
        cprev = cs[:, t - 1] if t > 0 else np.zeros((nb, h))
        hprev = hs[:, t - 1] if t > 0 else np.zeros((nb, h))
        dht = g[:, t] + dh
        dct = dc + dht * o * (1 - tc ** 2)
        dz = np.concatenate([dct * gg * i * (1 - i), dct * cprev * f * (1 - f),
                             dct * i * (1 - gg ** 2), dht * tc * o * (1 - o)], axis=1)
        dxp[:, t] = dz
        du += dz.T @ hprev
        dh, dc = dz @ u, dct * f
    return dxp, du


def _inputs(prim: str, nb: int, n: int, h: int, seed: int = 0, dtype=np.float64):
    """xp and U with pre-activations of order 1 (U scaled by 1/sqrt(h), as fan_in does)."""
    rng = np.random.default_rng(seed)
    k = 4 if prim == "lstm_scan" else 1
    xp = rng.uniform(-1.5, 1.5, (nb, n, k * h))
    u = rng.uniform(-1.5, 1.5, (k * h, h)) / np.sqrt(h)
    return xp.astype(dtype), u.astype(dtype)


def _run(prim: str, xp, u, g=None, wants=(True, True)):
    p = get(prim)
    out, saved = apply_forward(p, xp, u)
    if g is None:
        g = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    return out, apply_backward(p, g, out, (xp, u), wants, saved)


REFS = {"rnn_scan": (lambda xp, u: ref_rnn(xp, u), ref_rnn_grads),
        "lstm_scan": (lambda xp, u: ref_lstm(xp, u)[0], ref_lstm_grads)}


# ---------------------------------------------------------------------------------------------
# rnn_scan and lstm_scan


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
@pytest.mark.parametrize("nb, n, h", SIZES)
def test_scan_matches_the_step_by_step_reference(prim, nb, n, h) -> None:
    xp, u = _inputs(prim, nb, n, h)
    ref_fwd, ref_grads = REFS[prim]
    g = np.random.default_rng(1).standard_normal((nb, n, h))
    out, (dxp, du) = _run(prim, xp, u, g)
    assert out.shape == get(prim).shape(xp.shape, u.shape) == (nb, n, h)
    np.testing.assert_allclose(out, ref_fwd(xp, u), rtol=1e-12, atol=1e-13)
    want_dxp, want_du = ref_grads(g, xp, u)
    assert dxp.shape == xp.shape and du.shape == u.shape
    assert dxp.dtype == du.dtype == np.float64
    np.testing.assert_allclose(dxp, want_dxp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(du, want_du, rtol=1e-10, atol=1e-10)


def test_lstm_saves_gates_and_cells() -> None:
    xp, u = _inputs("lstm_scan", 2, 6, 3)
    hs, (acts, cs, tcs) = get("lstm_scan").forward(xp, u)
    _, ref_acts, ref_cs = ref_lstm(xp, u)
    np.testing.assert_allclose(acts, ref_acts, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cs, ref_cs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tcs, np.tanh(ref_cs), rtol=1e-12, atol=1e-14)
    # Without the saved residual the backward runs the forward again, to the same result.
    g = np.ones_like(hs)
    with_saved = get("lstm_scan").backward(g, hs, (xp, u), (True, True), saved=(acts, cs, tcs))
    without = get("lstm_scan").backward(g, hs, (xp, u), (True, True), saved=None)
    for a, b in zip(with_saved, without, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lstm_gate_order_is_pytorchs() -> None:
    # Only the first and third blocks of xp are large: in PyTorch's order i, f, g, o that makes
    # i = g = 1 and f = o = sigmoid(0) = 0.5, so c = 1 and h = 0.5 tanh(1); any other order
    # gives other values.
    h = 2
    xp = np.zeros((1, 1, 4 * h))
    xp[0, 0, :h] = 50.0                     # i -> 1
    xp[0, 0, 2 * h:3 * h] = 50.0            # g -> 1
    hs, (acts, cs, _) = get("lstm_scan").forward(xp, np.zeros((4 * h, h)))
    np.testing.assert_allclose(acts[0, 0], [1, 1, 0.5, 0.5, 1, 1, 0.5, 0.5])
    np.testing.assert_allclose(cs[0, 0], [1, 1])
    np.testing.assert_allclose(hs[0, 0], 0.5 * np.tanh(1.0))


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
def test_scan_float32_matches_float64(prim) -> None:
    xp, u = _inputs(prim, 32, 64, 128, seed=2, dtype=np.float32)
    x64, u64 = xp.astype(np.float64), u.astype(np.float64)
    g = np.random.default_rng(3).standard_normal((32, 64, 128))
    out32, grads32 = _run(prim, xp, u, g.astype(np.float32))
    out64, grads64 = _run(prim, x64, u64, g)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=5e-6)
    for a, b in zip(grads32, grads64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-6 * np.abs(b).max())


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
def test_scan_skips_unwanted_gradients(prim) -> None:
    xp, u = _inputs(prim, 3, 4, 2)
    _, (dxp, du) = _run(prim, xp, u)
    _, (dxp_only, none) = _run(prim, xp, u, wants=(True, False))
    assert none is None
    np.testing.assert_array_equal(dxp_only, dxp)
    _, (none, du_only) = _run(prim, xp, u, wants=(False, True))
    assert none is None
    np.testing.assert_array_equal(du_only, du)
    assert _run(prim, xp, u, wants=(False, False))[1] == (None, None)


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
@pytest.mark.parametrize("nb, n", [(0, 5), (3, 0)])
def test_scan_on_empty_batches_and_sequences(prim, nb, n) -> None:
    xp, u = _inputs(prim, max(nb, 1), max(n, 1), 3)
    xp = xp[:nb, :n]
    out, (dxp, du) = _run(prim, xp, u)
    assert out.shape == (nb, n, 3) and dxp.shape == xp.shape
    np.testing.assert_array_equal(du, np.zeros_like(u))


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
def test_scan_of_one_step_has_no_recurrent_gradient(prim) -> None:
    xp, u = _inputs(prim, 4, 1, 3)
    _, (_, du) = _run(prim, xp, u)
    np.testing.assert_array_equal(du, np.zeros_like(u))


@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
def test_scan_views_and_mixed_layouts(prim) -> None:
    # A non-contiguous xp (a slice of a wider array) and a transposed U give the same result.
    xp, u = _inputs(prim, 3, 5, 4)
    wide = np.concatenate([xp, np.ones_like(xp)], axis=2)[:, :, :xp.shape[2]]
    ut = np.ascontiguousarray(u.T).T
    assert not wide.flags.c_contiguous and not ut.flags.c_contiguous
    out, grads = _run(prim, xp, u)
    out2, grads2 = _run(prim, wide, ut)
    np.testing.assert_array_equal(out2, out)
    for a, b in zip(grads, grads2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("prim", ["rnn_scan", "lstm_scan"])
def test_scan_nan_propagates_forward_in_time_only(prim, dtype) -> None:
    xp, u = _inputs(prim, 3, 6, 4, dtype=dtype)
    xp[1, 2, 0] = np.nan
    out, _ = _run(prim, xp, u)
    assert np.isnan(out[1, 2, 0]) and np.isfinite(out[1, 2, 1:]).all()
    assert np.isnan(out[1, 3:]).all()       # through U, into every unit of the later steps
    assert np.isfinite(out[1, :2]).all() and np.isfinite(out[[0, 2]]).all()


@pytest.mark.parametrize("name, xp, u, words", [
    ("rnn_scan", (2, 5), (5, 5), r"expects xp \[B, n, h\] and U \[h, h\], got \[2, 5\]"),
    ("rnn_scan", (2, 5, 4), (4,), r"expects xp \[B, n, h\] and U \[h, h\]"),
    ("rnn_scan", (2, 5, 4), (4, 3),
     r"U must be \[h, h\] = \[4, 4\] for xp \[2, 5, 4\], got \[4, 3\]"),
    ("rnn_scan", (2, 5, 4), (3, 3), r"U must be \[h, h\] = \[4, 4\]"),
    ("lstm_scan", (2, 5), (8, 2), r"expects xp \[B, n, 4h\] and U \[4h, h\]"),
    ("lstm_scan", (2, 5, 8), (8, 2, 1), r"expects xp \[B, n, 4h\] and U \[4h, h\]"),
    ("lstm_scan", (2, 5, 8), (8, 3),
     r"U must be \[4h, h\] and xp \[B, n, 4h\] for the same h, got xp \[2, 5, 8\] and U \[8, 3\]"),
    ("lstm_scan", (2, 5, 12), (8, 2), r"for the same h"),
    ("lstm_scan", (2, 5, 8), (2, 8), r"for the same h"),
])
def test_scan_shape_errors(name, xp, u, words) -> None:
    with pytest.raises(ValueError, match=f"^{name}: .*" + words):
        get(name).shape(xp, u)


# ---------------------------------------------------------------------------------------------
# The float32 activations of the cells


@njit(cache=False, error_model="numpy")
def _activations(x, th, sg):
    for i in range(x.shape[0]):
        th[i] = tanh_(x[i])
        sg[i] = sigmoid_(x[i])


def _ulps(got, want):
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32))


def test_float32_activations_are_within_a_few_ulps() -> None:
    x = np.concatenate([np.linspace(-12, 12, 400_001), np.linspace(-1e-3, 1e-3, 20_001),
                        np.geomspace(1e-30, 1e-3, 1000), -np.geomspace(1e-30, 1e-3, 1000)])
    x = x.astype(np.float32)
    th, sg = np.empty_like(x), np.empty_like(x)
    _activations(x, th, sg)
    x64 = x.astype(np.float64)
    assert _ulps(th, np.tanh(x64)).max() <= 1.5
    assert _ulps(sg, sigmoid(x64)).max() <= 2.5
    # sigmoid keeps its relative accuracy down to sigmoid(-86) = 4.4e-38, then stays there.
    x = np.linspace(-86, -12, 100_001).astype(np.float32)
    th, sg = np.empty_like(x), np.empty_like(x)
    _activations(x, th, sg)
    assert _ulps(sg, sigmoid(x.astype(np.float64))).max() <= 2.5
    far = np.array([-86.5, -100.0, -1e30], np.float32)
    th, sg = np.empty_like(far), np.empty_like(far)
    _activations(far, th, sg)
    assert np.all(sg <= 4.5e-38) and np.all(sg > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_special_values(dtype) -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, 1e-40, -1e-40, 3e38, -3e38], dtype)
    th, sg = np.empty_like(x), np.empty_like(x)
    _activations(x, th, sg)
    np.testing.assert_array_equal(th, [1, -1, np.nan, 0, x[4], x[5], 1, -1])
    np.testing.assert_allclose(sg, [1, 0, np.nan, 0.5, 0.5, 0.5, 1, 0], rtol=0, atol=1e-37)


def test_float64_activations_are_libms() -> None:
    x = np.linspace(-30, 30, 10_001)
    th, sg = np.empty_like(x), np.empty_like(x)
    _activations(x, th, sg)
    np.testing.assert_allclose(th, np.tanh(x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(sg, sigmoid(x), rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------------------------
# embed


@pytest.mark.parametrize("ids_shape", [(7,), (3, 5), (2, 3, 4), ()])
def test_embed_gathers_rows_and_scatter_adds(ids_shape) -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6, 4))
    ids = rng.integers(0, 6, ids_shape)
    embed = get("embed")
    out = embed.forward(ids, table)
    assert out.shape == embed.shape(ids.shape, table.shape) == ids_shape + (4,)
    np.testing.assert_array_equal(out, table[ids])
    g = rng.standard_normal(out.shape)
    dids, dtable = embed.backward(g, out, (ids, table), (False, True))
    want = np.zeros_like(table)
    np.add.at(want, ids.reshape(-1), g.reshape(-1, 4))
    assert dids is None and dtable.dtype == np.float64
    np.testing.assert_allclose(dtable, want, rtol=1e-14, atol=1e-15)


def test_embed_repeated_ids_accumulate_and_unused_rows_are_zero() -> None:
    table = np.arange(12.0).reshape(4, 3)
    ids = np.array([[2, 2, 0], [2, 0, 2]])
    g = np.ones((2, 3, 3))
    _, dtable = get("embed").backward(g, table[ids], (ids, table), (False, True))
    np.testing.assert_array_equal(dtable, [[2, 2, 2], [0, 0, 0], [4, 4, 4], [0, 0, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embed_dtypes(dtype) -> None:
    rng = np.random.default_rng(1)
    table = rng.standard_normal((103, 64)).astype(dtype)
    ids = rng.integers(0, 103, (32, 64))
    embed = get("embed")
    out = embed.forward(ids.astype(np.int32), table)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, embed.forward(ids, table))
    g = rng.standard_normal(out.shape).astype(dtype)
    _, dtable = embed.backward(g, out, (ids, table), (False, True))
    want = np.zeros(table.shape)
    np.add.at(want, ids.reshape(-1), g.reshape(-1, 64).astype(np.float64))
    assert dtable.dtype == dtype
    np.testing.assert_allclose(dtable, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("bad", [[0, 4, 1], [0, -1, 1], [2**40, 0, 0]])
def test_embed_ids_out_of_range(bad) -> None:
    table = np.zeros((4, 2))
    ids = np.array(bad)
    for call in (lambda: get("embed").forward(ids, table),
                 lambda: get("embed").backward(np.zeros((3, 2)), np.zeros((3, 2)), (ids, table),
                                               (False, True))):
        with pytest.raises(ValueError, match=f"token id {bad[0] if bad[0] else bad[1]} is out "
                                             r"of range for an embedding table of 4 rows "
                                             r"\(expected 0..3\)") as err:
            call()
        assert isinstance(err.value, DpError) and err.value.kind == "data"


def test_embed_rejects_non_integer_ids() -> None:
    with pytest.raises(ValueError, match="token ids must be integers, got dtype float64"):
        get("embed").forward(np.array([0.0, 1.0]), np.zeros((4, 2)))


def test_embed_unwanted_table_gradient() -> None:
    ids, table = np.array([0, 1]), np.ones((2, 3))
    assert get("embed").backward(np.ones((2, 3)), table, (ids, table), (False, False)) == \
        (None, None)


@pytest.mark.parametrize("table", [(5,), (5, 2, 3), ()])
def test_embed_shape_errors(table) -> None:
    words = f"embed: the table must be a matrix [V, d], got {list(table)}"
    with pytest.raises(ValueError, match="^" + re.escape(words)):
        get("embed").shape((3, 4), table)


# ---------------------------------------------------------------------------------------------
# Through the executor: embed -> linear -> add -> lstm_scan -> sum, with lstm_scan's residual


def _lm_plan(batch=2, n=5, vocab=6, d=3, h=4):
    plan = Plan()
    ids = plan.new_var((batch, n), True, "int64")
    plan.inputs.append(ids)
    for path, shape in (("E", (vocab, d)), ("V", (4 * h, d)), ("b", (4 * h,)), ("U", (4 * h, h))):
        plan.params[path] = plan.new_var(shape, False)
        plan.specs[path] = ParamSpec(path, shape, "zeros", (), None)
    p = plan.params
    x = plan.add("embed", (ids, p["E"]))
    xp = plan.add("linear", (x, p["V"]))
    xp = plan.add("add", (xp, p["b"]))
    hs = plan.add("lstm_scan", (xp, p["U"]))
    assert (x.shape, xp.shape, hs.shape) == ((batch, n, d), (batch, n, 4 * h), (batch, n, h))
    plan.outputs.append(plan.add("sum", (hs,), batched=False, axes=(0, 1, 2)))
    typecheck_plan(plan)
    return plan


def test_executor_runs_an_lstm_plan() -> None:
    plan = _lm_plan()
    ex = Executable(plan, np.float64)
    assert ex.n == plan.next_id + 1            # one slot for lstm_scan's residual
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1, 1, v.shape) for k, v in plan.params.items()}
    ids = np.array([[0, 3, 3, 5, 1], [2, 2, 0, 4, 3]])
    loss, vjp, names = plan_loss_and_vjp(plan, ex, ids)

    want = ref_lstm(params["E"][ids] @ params["V"].T + params["b"], params["U"])[0].sum()
    assert loss(*params.values()) == pytest.approx(want, rel=1e-12)
    check_grads(loss, tuple(params.values()), vjp, rtol=1e-5, name="lstm plan")
