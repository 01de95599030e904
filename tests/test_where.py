"""`where(x > 0, a, b)`: values, gradients that stay finite where a branch is undefined (the
safe "double where" of lowering), the checker's errors, training with it, ONNX export.

The reliability target: `where(x > 0, log(x), 0)` and `where(x > 0, sqrt(x), 0)` at x <= 0
(0 exactly, and negative) give finite gradients, in float32 and float64.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import ROOT, dp_here
from dp.dsl import DpError, load_text
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import apply_backward, apply_forward, get
from dp.interpreter.export.onnx_export import export_onnx
from gradcheck import check_grads
from onnx.reference import ReferenceEvaluator

X = np.array([[-2.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0]])  # 0, both signs, and tiny ones


def _model(body: str, dtype=np.float64, n: int = 7) -> Model:
    model = Model(load_text(f"Net: R^{n} -> R^{n}\nNet(x) = {body}\n"), "Net", dtype=dtype)
    model.init(0)
    return model


def _value_and_grad(body: str, x: np.ndarray, dtype=np.float64):
    model = _model(body, dtype, x.shape[1])
    out, pullback = model.vjp(x.astype(dtype))
    (dx,), _ = pullback(np.ones_like(out))
    return out, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("body, value, grad", [
    ("where(x > 0, log(x), 0)", np.log, lambda x: 1 / x),
    ("where(x > 0, sqrt(x), 0)", np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    ("where(0 < x, log(x), 0)", np.log, lambda x: 1 / x),           # the name on the right
    ("where(x <= 0, 0, sqrt(x))", np.sqrt, lambda x: 0.5 / np.sqrt(x)),  # the false branch
    ("where(x >= 1e-40, log(x) * 2, 0) / 2", np.log, lambda x: 1 / x),
])
def test_undefined_branches_give_finite_gradients(body, value, grad, dtype) -> None:
    out, dx = _value_and_grad(body, X, dtype)
    x = X[0].astype(dtype)
    chosen = x > 0
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    with np.errstate(divide="ignore", invalid="ignore"):
        want, dwant = np.where(chosen, value(x), 0), np.where(chosen, grad(x), 0)
    np.testing.assert_allclose(out[0], want, rtol=1e-6)
    np.testing.assert_array_equal(dx[0][~chosen], 0)  # exactly 0 where the branch is not taken
    np.testing.assert_allclose(dx[0][chosen], dwant[chosen], rtol=1e-6)


def test_the_primitive_alone_would_give_nan() -> None:
    """Why lowering feeds the branch safe inputs: where(x > 0, log(x), 0) built from the
    primitives on x itself sends 0 * (1 / 0) = NaN into the gradient at x = 0."""
    x = np.array([0.0, 2.0])
    log, where = get("log"), get("where")
    with np.errstate(divide="ignore", invalid="ignore"):
        y, _ = apply_forward(log, x)
        out = where.forward(x, np.float64(0), y, np.float64(0), op=">")
        g = where.backward(np.ones(2), out, (x, np.float64(0), y, np.float64(0)),
                           (False, False, True, False), op=">")[2]
        (dx,) = apply_backward(log, g, y, (x,), (True,))
    assert np.isnan(dx[0]) and dx[1] == 0.5


@pytest.mark.parametrize("op, holds", [(">", [False, False, True]), ("<", [True, False, False]),
                                        (">=", [False, True, True]), ("<=", [True, True, False])])
def test_each_comparison_chooses_as_written(op, holds) -> None:
    out, dx = _value_and_grad(f"where(x {op} 1, 10 * x, -x)", np.array([[0.0, 1.0, 2.0]]))
    x = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(out[0], np.where(holds, 10 * x, -x))
    np.testing.assert_array_equal(dx[0], np.where(holds, 10.0, -1.0))


def test_gradient_matches_central_differences_away_from_the_boundary() -> None:
    """Through a whole module: a threshold parameter, a scalar branch, a module call in a
    branch; inputs at least 0.05 from every boundary."""
    text = """
Net: R^6 -> R^6
Net(x) = where(x > t, sqrt(x - t) * FeedForward(x; act = tanh), log(t - x + 2) + 1)
  param t: R ~ ones
"""
    model = Model(load_text(text), "Net", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (3, 6))
    x[np.abs(x - 1) < 0.05] += 0.1
    names = list(model.params)

    def fn(x, *ps):
        for k, p in zip(names, ps, strict=True):
            model.params[k][...] = p
        return model.predict(x)

    def vjp(c, out, xs):
        fn(*xs)
        _, pull = model.vjp(xs[0])
        (dx,), dps = pull(c)
        return (dx, *(dps[k] for k in names))

    check_grads(fn, (x, *(model.params[k].copy() for k in names)), vjp, rtol=1e-5)


def test_a_let_and_a_parameter_can_be_compared_and_numbers_choose_statically() -> None:
    out, dx = _value_and_grad("where(n > 3, x, 2 * x) + where(x - 1 > 0, 1, 0)\n  n = 4",
                              np.array([[0.5, 2.0]]))
    np.testing.assert_array_equal(out[0], [0.5, 3.0])
    np.testing.assert_array_equal(dx[0], [1.0, 1.0])


# --- the checker ---------------------------------------------------------------------------
@pytest.mark.parametrize("body, kind, message, col", [
    ("where(x, x, 0)", "type", "where's condition is a comparison, like x > 0, but it is x", 16),
    ("x > 0", "type", "a comparison is a mask, not a value: only where(...) takes it, as its "
     "condition", 10),
    ("where(x > 0, x)", "arity", "where takes 3 arguments, but 2 were given", 10),
    ("where(x > 0, x, y)\n  param y: R^3 ~ zeros", "shape",
     "where's values must be numbers or of one shape, but x is R^4 and y is R^3", 26),
    ("where(x > 0, x, 0) > 1", "type", "a comparison is a mask, not a value: only where(...) "
     "takes it, as its condition", 10),
])
def test_check_errors(body, kind, message, col) -> None:
    with pytest.raises(DpError) as info:
        load_text(f"Net: R^4 -> R^4\nNet(x) = {body}\n")
    assert (info.value.kind, info.value.message) == (kind, message)
    assert (info.value.span.line, info.value.span.col) == (2, col)


def test_a_chained_comparison_is_a_syntax_error() -> None:
    with pytest.raises(DpError) as info:
        load_text("Net: R^4 -> R^4\nNet(x) = where(0 < x < 1, x, 0)\n")
    assert info.value.kind == "syntax" and info.value.message.startswith("unexpected '<'")
    assert (info.value.span.line, info.value.span.col) == (2, 22)


def test_a_golden_error_exits_1() -> None:
    code, out, err = dp_here("check", "tests/programs/errors/where_condition.dp", cwd=ROOT)
    assert code == 1 and out == ""
    assert err.startswith("error[type]: where's condition is a comparison")


# --- training and export -------------------------------------------------------------------
PROGRAM = """
Leaky: R^n -> R^n
Leaky(x) = where(x > 0, x, 0.1 * x)

Blobs: R^4 -> R^3
Blobs(x) =
  h = FeedForward(x; m = 16, act = identity)
  FeedForward(Leaky(h) + where(h > 0, sqrt(h), 0); act = identity)

train Blobs on npz("blobs.npz"):
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs 8

run:
  print accuracy(Blobs, npz("blobs.npz"))
"""


def test_a_model_with_where_trains(tmp_path, write_program) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    centers = np.array([[2, 0, 0, 1], [0, 2, 0, -1], [0, 0, 2, 0]], dtype=np.float32)
    x = centers[y] + rng.normal(0, 0.6, (300, 4)).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    code, out, err = dp_here("train", write_program(PROGRAM))
    assert code == 0, err
    losses = [float(m) for m in re.findall(r"epoch +\d+/8 +loss ([0-9.]+)", out)]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert float(re.search(r"accuracy\(.*\) = ([0-9.]+)", out).group(1)) >= 0.9


def test_onnx_export_computes_what_dp_computes(tmp_path) -> None:
    model = _model("where(x > 0, log(x), 0) + where(x <= t, sqrt(t - x), x)\n"
                   "  param t: R ~ ones", np.float32)
    path = tmp_path / "where.onnx"
    export_onnx(model, str(path))
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Where", "Greater", "LessOrEqual", "Log", "Sqrt"} <= ops
    xs = np.array([[-2, -1, 0, 0.5, 1, 2, 3]] * 2, np.float32)
    got = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: xs})[0]
    np.testing.assert_allclose(got, model.predict(xs), rtol=1e-6, atol=1e-6)
