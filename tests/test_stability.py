"""Numerical stability in float32: every result finite and within 1e-5 relative of a float64
reference.

Extreme logits through log_softmax, cross_entropy and logsumexp ([1e4, -1e4, 0], [3e38, -3e38],
8 equal values, a gap of 1000, logsumexp of [0, 100]), sigmoid/tanh at +-1000, and layernorm
on a constant row (the output is beta within 1e-6, the gradients finite) and on a row of
variance 1e-12. The one exception is
[3e38, -3e38], whose exact log_softmax (-6e38) and wrong-label loss (6e38) lie beyond float32's
range: those entries must saturate to the correctly signed infinity, never NaN, while every
representable entry and every gradient stays finite and accurate.
"""

from __future__ import annotations

import numpy as np
import pytest
from dp.interpreter.core.primitives import get
from gradcheck import PATHS, force_path

F32_MAX = float(np.finfo(np.float32).max)
RTOL = 1e-5
ATOL = 1e-30  # values below 1e-30 (float32 denormals, underflow) count as zero

LOGITS = {
    "big_gap": [1e4, -1e4, 0.0],
    "near_max": [3e38, -3e38],
    "uniform8": [5.0] * 8,
    "gap1000": [1000.0, 0.0],
}


@pytest.fixture(params=PATHS, autouse=True)
def path(request, monkeypatch) -> str:
    """Every test runs on the Numba-kernel path and on the NumPy path (large arrays)."""
    force_path(monkeypatch, request.param)
    return request.param


def _ref_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return (x - m) - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _check(got: np.ndarray, ref: np.ndarray) -> None:
    """Finite and within RTOL where the reference fits in float32; else a signed infinity."""
    fits = np.abs(ref) <= F32_MAX
    assert np.isfinite(got[fits]).all(), got
    np.testing.assert_allclose(got[fits], ref[fits], rtol=RTOL, atol=ATOL)
    assert (got[~fits] == np.sign(ref[~fits]) * np.inf).all(), got


def _backward(name: str, inputs: tuple, out: np.ndarray, g: np.ndarray) -> np.ndarray:
    wants = tuple(i not in get(name).integer_inputs for i in range(len(inputs)))
    return get(name).backward(g, out, inputs, wants)[0]


@pytest.mark.parametrize("key", LOGITS)
def test_log_softmax_extremes(key) -> None:
    x32 = np.array([LOGITS[key]], np.float32)
    x64 = x32.astype(np.float64)
    out = get("log_softmax").forward(x32)
    assert out.dtype == np.float32
    ref = _ref_log_softmax(x64)
    _check(out, ref)
    g = np.linspace(-1, 1, x32.shape[1], dtype=np.float32)[None]
    dx = _backward("log_softmax", (x32,), out, g)
    soft = np.exp(ref)
    ref_dx = g - soft * g.astype(np.float64).sum(-1, keepdims=True)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, ref_dx, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("key", LOGITS)
def test_cross_entropy_extremes(key) -> None:
    row = LOGITS[key]
    k = len(row)
    x32 = np.array([row] * k, np.float32)
    labels = np.arange(k)
    x64 = x32.astype(np.float64)
    out = get("cross_entropy").forward(x32, labels)
    assert out.dtype == np.float32 and out.shape == (k,)
    ref = -_ref_log_softmax(x64)[labels, labels]
    _check(out, ref)
    g = np.ones(k, np.float32)
    dx = _backward("cross_entropy", (x32, labels), out, g)
    ref_dx = np.exp(_ref_log_softmax(x64)) - np.eye(k)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, ref_dx, rtol=RTOL, atol=1e-7)


def test_exactly_uniform_and_gap() -> None:
    x = np.full((1, 8), 5.0, np.float32)
    assert (get("softmax").forward(x) == 0.125).all()
    ls = get("log_softmax").forward(x)
    assert (ls == ls[0, 0]).all() and ls[0, 0] == np.float32(-np.log(8.0))
    loss = get("cross_entropy").forward(np.array([[1000.0, 0.0]], np.float32), np.array([1]))
    assert loss[0] == 1000.0


def test_logsumexp_0_100() -> None:
    x = np.array([[0.0, 100.0], [100.0, 0.0]], np.float32)
    out = get("logsumexp").forward(x)
    ref = 100.0 + np.log1p(np.exp(-100.0))
    np.testing.assert_allclose(out, [ref, ref], rtol=RTOL)
    dx = _backward("logsumexp", (x,), out, np.ones(2, np.float32))
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, [[np.exp(-100.0), 1.0], [1.0, np.exp(-100.0)]], rtol=RTOL,
                               atol=1e-30)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturating_activations_at_1000(name) -> None:
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow warnings
        out = get(name).forward(x)
        dx = _backward(name, (x,), out, np.ones_like(x))
    x64 = x.astype(np.float64)
    ref = np.tanh(x64) if name == "tanh" else 0.5 * (1 + np.tanh(x64 / 2))
    assert out.dtype == np.float32 and np.isfinite(out).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=1e-30)
    np.testing.assert_allclose(dx, 1 - ref**2 if name == "tanh" else ref * (1 - ref),
                               rtol=RTOL, atol=1e-30)


# ---------------------------------------------------------------------------------------------
# layernorm (eps = 1e-5, with gain and bias) on a constant row and on a row of variance 1e-12

EPS = 1e-5


def _ref_layernorm(x, gain, bias, g):
    """float64 value and gradients (dx, dgain, dbias) of xhat * gain + bias for cotangent g."""
    x, gain, g = (np.asarray(a, np.float64) for a in (x, gain, g))
    c = x - x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((c * c).mean(-1, keepdims=True) + EPS)
    xhat = c * rstd
    gg = g * gain
    dx = rstd * (gg - gg.mean(-1, keepdims=True) - xhat * (gg * xhat).mean(-1, keepdims=True))
    return xhat * gain + bias, dx, (g * xhat).sum(0), g.sum(0)


def _layernorm32(x, gain, bias, g):
    prim = get("layernorm")
    out, saved = prim.forward(x, gain, bias, eps=EPS)
    grads = prim.backward(g, out, (x, gain, bias), (True, True, True), saved=saved, eps=EPS)
    return out, grads


ROWS = {
    "constant": np.full((2, 8), 3.7, np.float32),
    "variance_1e-12": (0.5 + 1e-6 * np.array([[1, -1] * 4, [-1, 1] * 4])).astype(np.float32),
}


@pytest.mark.parametrize("key", ROWS)
def test_layernorm_degenerate_rows(key) -> None:
    x = ROWS[key]
    x64 = x.astype(np.float64)
    var = ((x64 - x64.mean(-1, keepdims=True)) ** 2).mean(-1)
    assert (var == 0).all() if key == "constant" else np.allclose(var, 1e-12, rtol=0.1)
    rng = np.random.default_rng(0)
    gain = rng.uniform(0.5, 2, 8).astype(np.float32)
    bias = rng.uniform(-2, 2, 8).astype(np.float32)
    g = rng.uniform(-1, 1, x.shape).astype(np.float32)
    out, grads = _layernorm32(x, gain, bias, g)
    ref, *ref_grads = _ref_layernorm(x, gain, bias, g)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert all(np.isfinite(d).all() and d.dtype == np.float32 for d in grads)
    if key == "constant":  # the output is beta exactly (within 1e-6)
        np.testing.assert_allclose(out, np.broadcast_to(bias, x.shape), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)
