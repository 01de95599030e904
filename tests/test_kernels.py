"""Kernels and primitives in float32 against float64 references.

- every primitive case: float32 forward/backward vs the float64 run (which test_gradcheck
  validates), with dtypes preserved;
- every Numba kernel, and the NumPy path of the same primitives (large arrays), and GELU: vs an
  independent float64 NumPy reference;
- the shape rule of every case agrees with the forward output;
- NaN propagates; no fastmath anywhere; the Numba cache directory is set and writable.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from dp.interpreter.core.primitives import apply_backward, apply_forward, get
from gradcheck import PATHS, TWO_PATH, force_path, sample_inputs
from test_gradcheck import CASES

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOFTMAX_FAMILY = {"softmax", "log_softmax", "logsumexp"}


def _run(name: str, inputs: tuple, g: np.ndarray | None = None, params: dict | None = None):
    prim = get(name)
    params = params or {}
    out, saved = apply_forward(prim, *inputs, **params)
    if g is None:
        g = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    wants = tuple(i not in prim.integer_inputs for i in range(len(inputs)))
    return out, apply_backward(prim, g, out, inputs, wants, saved, **params)


# ---------------------------------------------------------------------------------------------
# float32 against float64, for every case of every primitive


def _as32(xs: tuple) -> tuple:
    return tuple(x.astype(np.float32) if x.dtype == np.float64 else x for x in xs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_matches_float64(case) -> None:
    _float32_matches_float64(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.prim in TWO_PATH], ids=lambda c: c.id)
def test_float32_matches_float64_numpy_path(case, monkeypatch) -> None:
    force_path(monkeypatch, "numpy")
    _float32_matches_float64(case)


def _float32_matches_float64(case) -> None:
    prim = get(case.prim)
    x64 = sample_inputs(prim, case.args, case.params)
    x32 = _as32(x64)
    x64 = tuple(x.astype(np.float64) if x.dtype == np.float32 else x for x in x32)
    out64, _ = apply_forward(prim, *x64, **case.params)
    c = np.random.default_rng(1).standard_normal(out64.shape)
    out32, g32 = _run(case.prim, x32, c.astype(np.float32), case.params)
    _, g64 = _run(case.prim, x64, c, case.params)
    assert isinstance(out32, np.ndarray) and out32.dtype == np.float32, case.id
    atol = 1e-7 if case.prim in SOFTMAX_FAMILY else 1e-6
    np.testing.assert_allclose(out32, out64, atol=atol, rtol=1e-3, err_msg=case.id)
    for i, (a, b) in enumerate(zip(g32, g64, strict=True)):
        if b is None:
            assert a is None
            continue
        assert a.dtype == np.float32 and a.shape == x32[i].shape, (case.id, i)
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3, err_msg=f"{case.id} grad {i}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_shape_rule_agrees_with_forward(case) -> None:
    prim = get(case.prim)
    inputs = sample_inputs(prim, case.args, case.params)
    out, _ = apply_forward(prim, *inputs, **case.params)
    assert prim.shape(*(x.shape for x in inputs), **case.params) == out.shape, case.id


# ---------------------------------------------------------------------------------------------
# Each Numba kernel against an independent float64 NumPy reference


def ref_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_logsumexp(x):
    m = x.max(-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def ref_gelu_grad(x):
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    return 0.5 * (1 + np.tanh(u)) + 0.5 * x * du / np.cosh(u) ** 2


def _reference(name, x, g, labels=None):
    """(forward, gradient of <g, forward>) in float64, written without the kernels."""
    if name == "softmax":
        y = ref_softmax(x)
        return y, y * (g - (g * y).sum(-1, keepdims=True))
    if name == "log_softmax":
        y = x - ref_logsumexp(x)[..., None]
        return y, g - ref_softmax(x) * g.sum(-1, keepdims=True)
    if name == "logsumexp":
        return ref_logsumexp(x), g[..., None] * ref_softmax(x)
    if name == "cross_entropy":
        onehot = np.eye(x.shape[-1])[labels]
        picked = np.take_along_axis(x, labels[..., None], -1)[..., 0]
        return ref_logsumexp(x) - picked, g[..., None] * (ref_softmax(x) - onehot)
    if name == "gelu":
        return ref_gelu(x), g * ref_gelu_grad(x)
    raise KeyError(name)


REFERENCED = [(name, path) for name in TWO_PATH for path in PATHS] + [("gelu", "numpy")]


SHAPES = [(16, 10), (2, 3, 5), (1, 1), (3, 257), (7,)]


# Cross-entropy's logits need a batch axis, so it has no 1-D case.
@pytest.mark.parametrize("name, path, shape",
                         [(n, p, s) for n, p in REFERENCED for s in SHAPES
                          if not (n == "cross_entropy" and len(s) == 1)], ids=str)
def test_vs_numpy_reference(name, path, shape, monkeypatch) -> None:
    force_path(monkeypatch, path)
    rng = np.random.default_rng(0)
    x32 = (rng.standard_normal(shape) * 3).astype(np.float32)
    x64 = x32.astype(np.float64)
    labels = rng.integers(0, shape[-1], shape[:-1]) if name == "cross_entropy" else None
    inputs32 = (x32,) if labels is None else (x32, labels)
    out_shape = get(name).shape(*(np.shape(v) for v in inputs32))
    g64 = rng.standard_normal(out_shape)
    ref_out, ref_grad = _reference(name, x64, g64, labels)
    out32, grads32 = _run(name, inputs32, g64.astype(np.float32))
    atol = 1e-7 if name in SOFTMAX_FAMILY else 1e-6
    np.testing.assert_allclose(out32, ref_out, atol=atol, rtol=1e-3)
    np.testing.assert_allclose(grads32[0], ref_grad, atol=1e-4, rtol=1e-3)
    # The same kernels in float64 agree with the reference to rounding.
    inputs64 = (x64,) if labels is None else (x64, labels)
    out64, grads64 = _run(name, inputs64, g64)
    np.testing.assert_allclose(out64, ref_out, atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(grads64[0], ref_grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_views_and_empty_batches(path, monkeypatch) -> None:
    force_path(monkeypatch, path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_allclose(get("softmax").forward(x.T), ref_softmax(x.T.astype(np.float64)),
                               atol=1e-7, rtol=1e-3)
    np.testing.assert_allclose(get("gelu").forward(x[:, ::2]),
                               ref_gelu(x[:, ::2].astype(np.float64)), atol=1e-6, rtol=1e-3)
    for name in TWO_PATH + ("gelu",):
        empty = np.zeros((0, 5), np.float32)
        inputs = (empty, np.zeros(0, np.int64)) if name == "cross_entropy" else (empty,)
        out, grads = _run(name, inputs)
        assert out.shape == get(name).shape(*(v.shape for v in inputs))
        assert grads[0].shape == empty.shape


def test_cross_entropy_labels() -> None:
    from dp.dsl.errors import DpError
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    lab64 = np.array([0, 3, 1])
    out, _ = _run("cross_entropy", (x, lab64))
    out32, _ = _run("cross_entropy", (x, lab64.astype(np.int32)))
    np.testing.assert_array_equal(out, out32)
    for bad in ([0, 4, 1], [0, -2, 1]):
        with pytest.raises(DpError, match="out of range for 4 classes") as err:
            get("cross_entropy").forward(x, np.array(bad))
        assert err.value.kind == "data"


@pytest.mark.parametrize("path", PATHS)
def test_cross_entropy_label_minus_one_is_not_scored(path, monkeypatch) -> None:
    """-1 (an unmasked character of masked text): loss 0 and gradient 0 on both paths; the
    other rows are as without it."""
    force_path(monkeypatch, path)
    x = np.random.default_rng(1).standard_normal((4, 5))
    ce = get("cross_entropy")
    out = ce.forward(x, np.array([2, -1, 0, -1]))
    np.testing.assert_array_equal(out[[1, 3]], 0)
    np.testing.assert_allclose(out[[0, 2]], ce.forward(x[[0, 2]], np.array([2, 0])))
    dx, _ = ce.backward(np.ones(4), out, (x, np.array([2, -1, 0, -1])), (True, False))
    np.testing.assert_array_equal(dx[[1, 3]], 0)
    assert np.abs(dx[[0, 2]]).min() > 0


# ---------------------------------------------------------------------------------------------
# NaN propagation and fastmath


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", TWO_PATH)
def test_nan_propagation_rows(name, path, monkeypatch) -> None:
    force_path(monkeypatch, path)
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]], np.float32)
    inputs = (x, np.array([0, 1, 2])) if name == "cross_entropy" else (x,)
    out, (dx, *_) = _run(name, inputs, params={})
    rows_out = out.reshape(3, -1)
    assert np.isnan(rows_out[0]).all() and np.isnan(rows_out[2]).all()
    assert np.isfinite(rows_out[1]).all()
    assert np.isnan(dx[0]).all() and np.isfinite(dx[1]).all()


@pytest.mark.parametrize("path", PATHS)
def test_nan_propagation_elementwise_and_sums(path, monkeypatch) -> None:
    force_path(monkeypatch, path)
    x = np.array([[0.5, np.nan], [1.0, -1.0]], np.float32)
    out, (dx,) = _run("gelu", (x,))
    assert np.isnan(out[0, 1]) and np.isnan(dx[0, 1]) and np.isfinite(out[1]).all()
    for name in ["sum", "mean", "max"]:
        out, _ = _run(name, (x,), params={"axes": (1,)})
        assert np.isnan(out[0]) and np.isfinite(out[1]), name
    g = np.array([[np.nan, 1.0, 1.0]], np.float32)
    for name in ["softmax", "log_softmax"]:
        y = get(name).forward(np.zeros((1, 3), np.float32))
        (dx,) = get(name).backward(g, y, (np.zeros((1, 3), np.float32),), (True,))
        assert np.isnan(dx).all(), name


def test_nan_propagation_x_minus_y_plus_y() -> None:
    # The numba docs' fastmath example: (x - y) + y at (0, inf) is NaN without fastmath.
    x = np.zeros(3, np.float32)
    y = np.full(3, np.inf, np.float32)
    with np.errstate(invalid="ignore"):
        assert np.isnan(get("add").forward(get("sub").forward(x, y), y)).all()

    @njit(cache=False, error_model="numpy")
    def probe(a, b):
        out = np.empty_like(a)
        for i in range(a.shape[0]):
            out[i] = (a[i] - b[i]) + b[i]
        return out

    assert np.isnan(probe(x, y)).all()


def _sources() -> list[pathlib.Path]:
    return sorted((ROOT / "interpreter").rglob("*.py"))


def test_no_fastmath_under_interpreter() -> None:
    hits = [f"{p}:{i}" for p in _sources()
            for i, line in enumerate(p.read_text().splitlines(), 1) if "fastmath=True" in line]
    assert hits == []


UNSAFE_FASTMATH = {"fast", "nnan", "ninf"}


def _kernel_decorators():
    """(file:function, keyword dict) for every @njit / @jit decorator under interpreter/."""
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                func = dec.func if isinstance(dec, ast.Call) else dec
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("njit", "jit"):
                    keywords = dec.keywords if isinstance(dec, ast.Call) else []
                    yield f"{path.name}:{node.name}", {k.arg: ast.literal_eval(k.value)
                                                       for k in keywords}


def test_kernels_use_the_boring_decorator() -> None:
    # cache=True, error_model="numpy", and fastmath off or an explicit flag set that keeps
    # NaN and inf semantics (the kernel rules of interpreter/core/kernels/__init__.py).
    found = list(_kernel_decorators())
    assert len(found) >= 9, found
    bad = [(where, kw) for where, kw in found
           if kw.get("cache") is not True or kw.get("error_model") != "numpy"
           or kw.get("fastmath", False) is True
           or (isinstance(kw.get("fastmath"), (set, dict, list, tuple))
               and UNSAFE_FASTMATH & set(kw["fastmath"]))]
    assert bad == []


# ---------------------------------------------------------------------------------------------
# Numba's cache directory


def test_cache_dir_is_set_and_writable() -> None:
    import numba.core.config
    path = os.environ.get("NUMBA_CACHE_DIR")
    assert path and os.access(path, os.W_OK)
    numba.core.config.reload_config()
    assert numba.core.config.CACHE_DIR == path


def test_cache_dir_without_home(tmp_path) -> None:
    # HOME is a regular file, so ~/.cache cannot be created even by root.
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_DISABLE_JIT")}
    env.update(HOME=str(home), TMPDIR=str(tmp_path))
    code = ("import os, numpy as np\n"
            "from dp.interpreter.core.primitives import get\n"
            "print(get('softmax').forward(np.zeros((1, 4), np.float32))[0, 0])\n"
            "print(os.environ['NUMBA_CACHE_DIR'])\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cannot cache" not in done.stderr and "NumbaWarning" not in done.stderr
    value, cache_dir = done.stdout.split()
    assert float(value) == 0.25
    assert cache_dir.startswith(str(tmp_path)) and os.listdir(cache_dir)
