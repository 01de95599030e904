"""The losses of real outputs: squared_error, absolute_error, and two classes by the sign of a
score, logistic and hinge. Each loss's values against its formula, its gradient (float64,
central differences) through the primitive and through a model's loss plan, stability at
large margins, and labels that are not two classes refused."""

from __future__ import annotations

import numpy as np
import pytest
from dp.dsl import load_text
from dp.dsl.errors import DpError
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import get
from gradcheck import check_grads, check_primitive, plan_loss_and_vjp

RNG = np.random.default_rng(0)
S = RNG.uniform(-3, 3, (6, 4))  # scores or outputs: 6 examples of 4 entries
T = RNG.uniform(-3, 3, (6, 4))  # real targets
LABELS = RNG.integers(0, 2, (6, 4))  # two classes: 0 stands for t = -1, 1 for t = +1
SIGNS = 2 * LABELS - 1

# name -> (its second operand, the formula of one entry's loss)
FORMULAS = {
    "squared_error": (T, lambda s: (s - T) ** 2),
    "absolute_error": (T, lambda s: np.abs(s - T)),
    "logistic": (LABELS, lambda s: np.log(1 + np.exp(-SIGNS * s))),
    "hinge": (LABELS, lambda s: np.maximum(0, 1 - SIGNS * s)),
}


@pytest.mark.parametrize("name", FORMULAS)
def test_each_loss_is_its_formula_averaged_over_an_examples_entries(name):
    target, formula = FORMULAS[name]
    prim = get(name)
    assert prim.shape(S.shape, target.shape) == (6,)
    np.testing.assert_allclose(prim.forward(S, target), formula(S).mean(axis=1), rtol=1e-12)
    # one entry an example (a score R is [B]; R^1 is [B, 1]): the entry's loss itself
    np.testing.assert_allclose(prim.forward(S[:, 0], target[:, 0]), formula(S)[:, 0],
                               rtol=1e-12)
    np.testing.assert_allclose(prim.forward(S[:, :1], target[:, :1]), formula(S)[:, 0],
                               rtol=1e-12)


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("shape", [(6,), (6, 1), (6, 4), (2, 3, 2)])
def test_each_loss_gradient_matches_central_differences(name, shape):
    target = FORMULAS[name][0].reshape(-1)[:int(np.prod(shape))].reshape(shape)
    s = S.reshape(-1)[:target.size].reshape(shape).copy()
    if name == "absolute_error":  # keep away from the kink s = t
        s[np.abs(s - target) < 1e-2] += 0.1
    if name == "hinge":  # ... and from the bend at the margin t s = 1
        margin = (2 * target - 1) * s
        s[np.abs(margin - 1) < 1e-2] *= 1.1
    check_primitive(get(name), (s, target), {})


def test_the_hinge_gradient_is_minus_t_below_the_margin_and_zero_beyond():
    s = np.array([0.5, 2.0, -0.5, -2.0, 0.99])
    labels = np.array([1, 1, 0, 0, 1])
    g = np.ones(5)
    ds, dl = get("hinge").backward(g, None, (s, labels), (True, False))
    np.testing.assert_array_equal(ds, [-1.0, 0.0, 1.0, 0.0, -1.0])
    assert dl is None


def test_logistic_is_stable_at_large_margins():
    s = np.array([1000.0, -1000.0, 1000.0, -1000.0], np.float32)
    labels = np.array([1, 1, 0, 0])
    loss = get("logistic").forward(s, labels)
    assert loss.dtype == np.float32
    np.testing.assert_array_equal(loss, [0.0, 1000.0, 1000.0, 0.0])
    ds, _ = get("logistic").backward(np.ones(4, np.float32), loss, (s, labels), (True, False))
    assert ds.dtype == np.float32
    np.testing.assert_array_equal(ds, [0.0, -1.0, 1.0, 0.0])


@pytest.mark.parametrize("name", ["logistic", "hinge"])
def test_labels_other_than_0_and_1_are_a_data_error_in_the_primitive(name):
    for labels, bad in (([0, 2, 1], 2), ([1, -1, 1], -1)):
        with pytest.raises(DpError) as e:
            get(name).forward(np.zeros(3), np.array(labels))
        assert (e.value.kind, e.value.message) == (
            "data", f"{name} takes the labels 0 and 1, but a label is {bad}")


# --- through a model's loss plan --------------------------------------------------------------
PROGRAM = """\
Score: R^n -> R
Score(h) = w h + b
  param w: R^n ~ glorot
  param b: R ~ zeros

One: R^3 -> R
One(x) = Score(FeedForward(x; act = tanh) : R^4)

Ones: R^3 -> R^1
Ones(x) = FeedForward(FeedForward(x; act = tanh) : R^4; act = identity)

Many: R^3 -> R^2
Many(x) = FeedForward(FeedForward(x; act = tanh) : R^4; act = identity)
"""
TPROG = load_text(PROGRAM)


@pytest.mark.parametrize("model,loss", [("One", "squared_error"), ("Many", "absolute_error"),
                                        ("One", "logistic"), ("Ones", "logistic"),
                                        ("One", "hinge"), ("Ones", "hinge")])
def test_a_models_loss_and_its_gradient_in_float64(model, loss):
    """The plan a model trains with: its mean loss is the formula's over the batch, and the
    gradient of every parameter matches central differences."""
    m = Model(TPROG, model, dtype=np.float64)
    m.init(3)
    x = RNG.standard_normal((5, 3))
    if loss in ("logistic", "hinge"):
        y = RNG.integers(0, 2, (5,) + m.out_shape)
    else:
        y = RNG.standard_normal((5,) + m.out_shape)
    s = m.predict(x)
    t = 2 * y - 1 if loss in ("logistic", "hinge") else y
    per_entry = {"squared_error": (s - t) ** 2, "absolute_error": np.abs(s - t),
                 "logistic": np.log1p(np.exp(-t * s)), "hinge": np.maximum(0, 1 - t * s)}[loss]
    assert m.loss(loss, x, y) == pytest.approx(per_entry.mean(), rel=1e-12)
    ex = m._executable(5, loss)
    fn, vjp, names = plan_loss_and_vjp(ex.plan, ex, x, y)
    params = tuple(np.array(m.params[n]) for n in names)
    if loss == "hinge":  # no margin near the bend, where the gradient jumps
        assert np.all(np.abs(t * s - 1) > 1e-3)
    check_grads(fn, params, vjp, name=f"{model} {loss}")
