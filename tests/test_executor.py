"""The executor's lean paths: gradients written straight into the flat gradient buffer
(`backward_into`, linear's `into=`), the small-product kernel of linear against NumPy and
BLAS, and inference that returns arrays of the caller's own without dropping a check."""

from __future__ import annotations

import dp
import numpy as np
import pytest
from conftest import ROOT
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.kernels import linear as K
from dp.interpreter.core.plan import ParamSpec, Plan, typecheck_plan
from dp.interpreter.core.primitives import get, linalg
from gradcheck import check_primitive, numeric_grad, sample_inputs
from test_gradcheck import CASES

MLP = str(ROOT / "programs" / "digits_mlp.dp")
TIED = """\
Tied: R^6 -> R^6
Tied(x) =
  param W: R^(6, 6) ~ glorot
  param b: R^6 ~ uniform(0.5)
  W relu(W x + b) + b
"""
LINEAR = [c for c in CASES if c.prim == "linear"]


def _ref(x, w, b, relu):
    out = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    return np.maximum(out, 0) if relu else out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(1, 64, 128), (1, 128, 10), (3, 5, 7), (1, 1, 1), (0, 4, 3)])
def test_small_linear_is_numpys_product(shape, relu, dtype):
    n, k, m = shape
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, k), (m, k), (m,)))
    out = np.full((n, m), 7, dtype)
    K.small_linear(x, w, b, relu, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, _ref(x, w, b, relu), rtol=tol, atol=tol * k)
    K.small_linear(x, w, b[:0], relu, out)  # no bias
    np.testing.assert_allclose(out, _ref(x, w, None, relu), rtol=tol, atol=tol * k)


def test_small_linear_keeps_nan_and_inf_through_relu():
    x = np.array([[np.nan, 1.0], [np.inf, 0.0], [-np.inf, 0.0]], np.float32)
    w = np.ones((2, 2), np.float32)
    out = np.empty((3, 2), np.float32)
    K.small_linear(x, w, np.zeros(2, np.float32), True, out)
    assert np.isnan(out[0]).all() and (out[1] == np.inf).all() and (out[2] == 0).all()


@pytest.mark.parametrize("small", [True, False], ids=["kernel", "blas"])
@pytest.mark.parametrize("case", LINEAR, ids=lambda c: c.id)
def test_linear_both_paths_agree_with_central_differences(case, small, monkeypatch):
    """The gradient-check cases are all small: run them through BLAS too."""
    monkeypatch.setattr(linalg, "SMALL", 1 << 40 if small else -1)
    monkeypatch.setattr(linalg, "SMALL_ROWS", 1 << 40)
    prim = get("linear")
    check_primitive(prim, sample_inputs(prim, case.args, case.params), case.params)


@pytest.mark.parametrize("relu", [False, True])
def test_the_two_paths_give_one_forward(relu, monkeypatch):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 16), (8, 16), (8,)))
    small = linalg.linear_forward(x, w, b, relu=relu)
    monkeypatch.setattr(linalg, "SMALL", -1)
    np.testing.assert_allclose(small, linalg.linear_forward(x, w, b, relu=relu), rtol=1e-6,
                               atol=1e-6)
    assert small.shape == (1, 2, 8) and small.dtype == np.float32


@pytest.mark.parametrize("relu", [False, True])
def test_linear_backward_writes_into_the_arrays_it_is_given(relu):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    out = linalg.linear_forward(x, w, b, relu=relu)
    g = rng.standard_normal(out.shape)
    fresh = linalg.linear_backward(g, out, (x, w, b), (True, True, True), relu=relu)
    dw, db = np.full_like(w, np.nan), np.full_like(b, np.nan)
    given = linalg.linear_backward(g, out, (x, w, b), (True, True, True), relu=relu,
                                   into=(None, dw, db))
    assert given[1] is dw and given[2] is db
    for a, e in zip(given, fresh, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_a_tied_weight_accumulates_in_the_gradient_buffer():
    """W and b are used twice: the first contribution is written into the flat gradient
    buffer by linear's GEMM, the second added in place; central differences agree."""
    net = dp.loads(TIED).model("Tied", seed=0, dtype="float64")
    model = net._model
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    model.grad_flat[:] = np.nan  # whatever was there before is overwritten
    loss = model.loss_and_grad("squared_error", x, y)
    np.testing.assert_allclose(model.grad_flat, numeric_grad(model, "squared_error", x, y),
                               rtol=1e-6, atol=1e-8)
    first = model.grad_flat.copy()
    assert model.loss_and_grad("squared_error", x, y) == loss  # not added to the last one
    np.testing.assert_array_equal(model.grad_flat, first)
    ex = model._plans[(4, "squared_error", False)]
    fresh = ex.backward(ex.forward(x, y))  # the plain pass, fresh arrays
    for path, v in ex.plan.params.items():
        np.testing.assert_allclose(model.grads[path], fresh[v.id], rtol=1e-13, atol=1e-15)


def test_a_parameter_the_output_does_not_reach_gets_a_zero_gradient():
    plan = Plan()
    x = plan.new_var((3, 4), True)
    plan.inputs.append(x)
    for path, shape in (("W", (2, 4)), ("unused", (5,))):
        plan.params[path] = plan.new_var(shape, False)
        plan.specs[path] = ParamSpec(path, shape, "zeros", (), None)
    h = plan.add("linear", (x, plan.params["W"]))
    plan.outputs.append(plan.add("sum", (h,), batched=False, axes=(0, 1)))
    typecheck_plan(plan)
    ex = Executable(plan, np.float64)
    rng = np.random.default_rng(4)
    params = {"W": rng.standard_normal((2, 4)), "unused": rng.standard_normal(5)}
    grads = {"W": np.full((2, 4), 9.0), "unused": np.full(5, 9.0)}
    ex.bind(params, grads)
    xv = rng.standard_normal((3, 4))
    ex.backward_into(ex.forward(xv))
    np.testing.assert_allclose(grads["W"], np.tile(xv.sum(0), (2, 1)), rtol=1e-13)
    np.testing.assert_array_equal(grads["unused"], np.zeros(5))
    with pytest.raises(ValueError, match="the plan takes 1 inputs, not 2"):
        ex.forward(xv, xv)


def test_batch_one_inference_is_the_reference_and_owns_its_result():
    net = dp.load(MLP).model(seed=0)
    p = net.params
    x = np.random.default_rng(5).random((1, 64)).astype(np.float32)
    want = (np.maximum(x @ p["Digits.feedforward1.W"].T + p["Digits.feedforward1.b"], 0)
            @ p["Digits.feedforward2.W"].T + p["Digits.feedforward2.b"])
    out = net(x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    out[:] = 0  # the caller's array: the next call is not changed by it
    np.testing.assert_array_equal(net(x), net._model.predict(x))
    assert not np.shares_memory(net(x), net(x))
    # the same numbers whatever form the input takes: float64, a strided view, a list
    wide = np.zeros((1, 128), np.float64)
    wide[:, ::2] = x
    for same in (x.astype(np.float64), wide[:, ::2], x.tolist()):
        np.testing.assert_array_equal(net(same), net(x))
    batch = np.random.default_rng(6).random((5, 64)).astype(np.float32)  # BLAS; in ones not
    np.testing.assert_allclose(net._model.predict(batch, chunk=1), net(batch), rtol=1e-5,
                               atol=1e-6)


def test_an_output_that_is_its_input_is_a_copy():
    net = dp.loads("Same: R^3 -> R^3\nSame(x) = x\n").model("Same")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net(x)
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


def test_the_lean_call_keeps_every_check():
    net = dp.load(MLP).model(seed=0)
    cases = [
        (np.zeros((1, 63), np.float32), "shape", "Digits: R^64 -> R^10 takes the input with "
                                                 "shape (batch, 64), but it has shape (1, 63)"),
        (np.zeros((1, 1, 64), np.float32), "shape", "Digits: R^64 -> R^10 takes the input "
                                                    "with shape (batch, 64), but it has shape "
                                                    "(1, 1, 64)"),
        (np.zeros((1, 64), np.complex64), "type", "Digits: R^64 -> R^10 takes real numbers as "
                                                  "the input, but it has dtype complex64"),
    ]
    for x, kind, message in cases:
        with pytest.raises(dp.Error) as info:
            net(x)
        assert (info.value.kind, info.value.message) == (kind, message)
    assert net(np.zeros((0, 64), np.float32)).shape == (0, 10)
