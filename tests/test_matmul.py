"""`a @ b` runs as the checker types it: vectors, matrices and stacks of matrices, each side
computed from the input (batched) or a parameter, against NumPy applied example by example, with
gradients against central differences."""

from __future__ import annotations

import numpy as np
import pytest
from dp.dsl import load_text
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import typecheck_plan
from gradcheck import check_grads, numeric_grad, plan_loss_and_vjp

SHAPES = {  # one example's a and b; 7 examples, a size no axis has
    "vector @ vector": ((3,), (3,)),
    "matrix @ vector": ((2, 3), (3,)),
    "vector @ matrix": ((3,), (3, 4)),
    "matrix @ matrix": ((2, 3), (3, 4)),
    "stack @ stack": ((5, 2, 3), (5, 3, 4)),
    "stacks of stacks": ((2, 5, 2, 3), (2, 5, 3, 4)),
}
SIDES = {"input @ param": (True, False), "param @ input": (False, True),
         "input @ input": (True, True), "param @ param": (False, False)}
BATCH = 7


def _type(shape) -> str:
    return "R" if not shape else f"R^({', '.join(str(n) for n in shape)})"


def _program(sa, sb, ba: bool, bb: bool) -> str:
    """M over the batched sides (each times a parameter, so that its gradient is checked too),
    the others parameters; with no batched side, M adds its input to the product."""
    out = np.matmul(np.zeros(sa), np.zeros(sb)).shape
    args = [(n, s) for n, s, b in (("a", sa, ba), ("b", sb, bb)) if b] or [("x", out)]
    sig = ", ".join(_type(s) for _, s in args)
    sig = f"({sig})" if len(args) > 1 else sig
    left, right = ("a * ua" if ba else "pa"), ("b * ub" if bb else "pb")
    tail = "" if ba or bb else " + x"
    params = "".join(f"  param {'u' if b else 'p'}{n}: {_type(s)} ~ normal(1)\n"
                     for n, s, b in (("a", sa, ba), ("b", sb, bb)))
    return (f"M: {sig} -> {_type(out)}\nM({', '.join(n for n, _ in args)}) = "
            f"({left}) @ ({right}){tail}\n{params}")


def _reference(params: dict, inputs: list, sa, sb, ba: bool, bb: bool) -> np.ndarray:
    """NumPy on one example at a time."""
    outs = []
    for i in range(BATCH):
        xs = iter(x[i] for x in inputs)
        a = next(xs) * params["M.ua"] if ba else params["M.pa"]
        b = next(xs) * params["M.ub"] if bb else params["M.pb"]
        outs.append(np.matmul(a, b) + (inputs[0][i] if not (ba or bb) else 0))
    return np.stack(outs)


def _case(shapes: str, sides: str):
    (sa, sb), (ba, bb) = SHAPES[shapes], SIDES[sides]
    model = Model(load_text(_program(sa, sb, ba, bb)), "M", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((BATCH,) + s) for s, b in ((sa, ba), (sb, bb)) if b] or [
        rng.standard_normal((BATCH,) + model.out_shape)]
    plan = lower(model.tprog, "M", BATCH)
    typecheck_plan(plan)
    ex = Executable(plan, np.float64)
    ex.bind(model.params)
    return model, plan, ex, inputs, (sa, sb, ba, bb)


@pytest.mark.parametrize("sides", SIDES)
@pytest.mark.parametrize("shapes", SHAPES)
def test_matmul_computes_each_example_as_numpy_does(shapes, sides):
    model, plan, ex, inputs, case = _case(shapes, sides)
    want = _reference(model.params, inputs, *case)
    got = ex.outputs(ex.forward(*inputs))[0]
    assert got.shape == (BATCH,) + model.out_shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if len(inputs) == 1:  # what a user runs
        np.testing.assert_allclose(model.predict(inputs[0]), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.predict(inputs[0][:1]), want[:1], rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("sides", SIDES)
@pytest.mark.parametrize("shapes", SHAPES)
def test_matmul_gradients_match_central_differences(shapes, sides):
    model, plan, ex, inputs, _ = _case(shapes, sides)
    loss, vjp, names = plan_loss_and_vjp(plan, ex, *inputs)
    assert sorted(names) == sorted(model.params)
    check_grads(loss, tuple(model.params[n] for n in names), vjp, rtol=1e-6,
                name=f"{shapes}, {sides}")


SCORE = """
Score: R^4 -> R
Score(x) = w @ x + c
  param w: R^4 ~ normal(1)
  param c: R ~ zeros
"""


def test_a_dot_product_with_a_parameter_runs_and_trains():
    model = Model(load_text(SCORE), "Score", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(2).standard_normal((3, 4))
    model.params["Score.c"][...] = 0.5
    np.testing.assert_allclose(model.predict(x), x @ model.params["Score.w"] + 0.5, rtol=1e-12)
    y = np.array([1.0, -1.0, 2.0])
    model.loss_and_grad("squared_error", x, y)
    analytic = model.grad_flat.copy()
    numeric = numeric_grad(model, "squared_error", x, y)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
