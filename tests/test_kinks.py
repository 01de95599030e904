"""Kinks: where a primitive is not differentiable, the gradient dp gives is pinned, and the
gradient-check sampler never draws within 1e-3 of one.

Pinned: relu'(0) = 0 and abs'(0) = 0 (for +0.0 and -0.0), a tie of max, maxpool2d or
maximum/minimum sends the whole gradient to the first maximal entry (the first argument), a
tie of where's comparison chooses the second branch, and the gradient of an L2 norm at 0 is
finite. dp has no L2-norm primitive: a norm is written `sqrt(sum(square(x)))`, whose gradient
at 0 is NaN (0 * inf) as in any framework without a special case; written with where (its
branches computed on safe inputs) it is 0. The norms dp computes itself are finite at 0 too:
layernorm's sqrt(var + eps) on a constant row, and gradient clipping's global norm.
"""

from __future__ import annotations

import numpy as np
import pytest
from dp.dsl import load_text
from dp.interpreter.core.model import Model
from dp.interpreter.core.optim import clip_grad_norm, grad_norm
from dp.interpreter.core.primitives import (
    PRIMITIVES,
    apply_backward,
    apply_forward,
    get,
    near_group_tie,
)
from gradcheck import KINK_TOL, Arg, sample_inputs


def _grad(name: str, inputs: tuple, g=None, **params) -> tuple:
    prim = get(name)
    out, saved = apply_forward(prim, *inputs, **params)
    g = np.ones_like(out) if g is None else g
    return apply_backward(prim, g, out, inputs, (True,) * len(inputs), saved, **params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_abs_at_zero(dtype) -> None:
    x = np.array([0.0, -0.0, 1.0, -1.0], dtype=dtype)
    (dr,) = _grad("relu", (x,))
    (da,) = _grad("abs", (x,))
    np.testing.assert_array_equal(dr, [0, 0, 1, 0])
    np.testing.assert_array_equal(da, [0, 0, 1, -1])


def test_max_tie_goes_to_first_index() -> None:
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    (dx,) = _grad("max", (x,), axes=(1,))
    np.testing.assert_array_equal(dx, [[0, 1, 0, 0], [1, 0, 0, 0]])
    (dx,) = _grad("max", (x.T,), axes=(0,))
    np.testing.assert_array_equal(dx, [[0, 1], [1, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_tie_goes_to_first_index_of_the_window(dtype) -> None:
    """Row-major order inside each 2x2 window: the first of the tied entries gets it all."""
    x = np.array([[[[2.0, 2.0, 0.0, 1.0],
                    [2.0, 1.0, 1.0, 1.0],
                    [0.0, 3.0, 4.0, 0.0],
                    [3.0, 3.0, 0.0, 4.0]]]], dtype=dtype)
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=dtype)
    (dx,) = _grad("maxpool2d", (x,), g, size=2, stride=2)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 0, 2],
                                             [0, 0, 0, 0],
                                             [0, 3, 4, 0],
                                             [0, 0, 0, 0]])


def test_maximum_minimum_tie_goes_to_first_argument() -> None:
    a, b = np.array([1.0, 2.0]), np.array([1.0, 3.0])
    assert [list(d) for d in _grad("maximum", (a, b))] == [[1, 0], [0, 1]]
    assert [list(d) for d in _grad("minimum", (a, b))] == [[1, 1], [0, 0]]


def test_where_tie_chooses_the_second_branch_and_the_comparison_has_no_gradient() -> None:
    x, y = np.array([1.0, 1.0, 2.0]), np.array([1.0, 0.0, 2.0])
    a, b = np.array([5.0, 6.0, 7.0]), np.array([-5.0, -6.0, -7.0])
    dx, dy, da, db = _grad("where", (x, y, a, b), op=">")
    np.testing.assert_array_equal(get("where").forward(x, y, a, b, op=">"), [-5, 6, -7])
    assert [list(d) for d in (dx, dy, da, db)] == [[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1]]
    dx, dy, da, db = _grad("where", (x, y, a, b), op=">=")
    assert [list(d) for d in (da, db)] == [[1, 1, 1], [0, 0, 0]]


# --- the L2 norm at 0 ------------------------------------------------------------------------
def _input_grad(body: str, x: np.ndarray) -> np.ndarray:
    model = Model(load_text(f"Net: R^3 -> R\nNet(x) =\n  s = sum(square(x))\n  {body}\n"),
                  "Net", dtype=np.float64)
    out, pullback = model.vjp(x)
    (dx,), _ = pullback(np.ones_like(out))
    return dx


def test_l2_norm_written_with_where_has_gradient_0_at_0() -> None:
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])
    dx = _input_grad("where(s > 0, sqrt(s), 0)", x)
    np.testing.assert_array_equal(dx[0], [0, 0, 0])
    np.testing.assert_allclose(dx[1], [0.6, 0, -0.8], rtol=1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):  # without where: 0 * inf
        assert np.isnan(_input_grad("sqrt(s)", x)[0]).all()


def test_layernorm_of_a_constant_row_has_a_finite_gradient() -> None:
    """Its norm of the centred row is 0 there; eps = 1e-5 keeps 1 / sqrt(var + eps) finite."""
    x = np.full((2, 5), 1.5)
    g = np.random.default_rng(0).standard_normal(x.shape)
    (dx,) = _grad("layernorm", (x,), g, eps=1e-5)
    want = (g - g.mean(-1, keepdims=True)) / np.sqrt(1e-5)
    np.testing.assert_allclose(dx, want, rtol=1e-12)


def test_clipping_a_zero_gradient_is_finite_and_changes_nothing() -> None:
    grads = np.zeros(6, np.float32)
    assert grad_norm(grads) == 0.0
    assert clip_grad_norm(grads, 1.0) == 0.0
    assert (grads == 0).all() and not np.signbit(grads).any()


# --- the sampler -------------------------------------------------------------------------------
def test_the_sampler_redraws_within_1e_3_of_a_kink() -> None:
    # 35 draws from uniform[-2, 2] land within 1e-3 of 0 for some seed in 0..199 (about 1.7%
    # each); the sampler must never return such a draw, for any registered kink.
    assert KINK_TOL == 1e-3
    for name, args, params in [("relu", (Arg((5, 7)),), {}), ("abs", (Arg((5, 7)),), {}),
                               ("maximum", (Arg((5, 7)), Arg((5, 7))), {}),
                               ("max", (Arg((5, 7)),), {"axes": (1,)}),
                               ("maxpool2d", (Arg((1, 1, 5, 7)),), {"size": 3, "stride": 2}),
                               ("where", (Arg((5, 7)), Arg(()), Arg((5, 7)), Arg(())),
                                {"op": ">"})]:
        prim = get(name)
        assert prim.kinks, name
        for seed in range(200):
            inputs = sample_inputs(prim, args, params, seed=seed)
            assert not any(k(inputs, params, 1e-3) for k in prim.kinks), (name, seed)


def test_the_kink_predicates_fire_within_the_tolerance_only() -> None:
    x = np.array([[1.0, 1.0005, 0.0], [3.0, 2.0, 2.5]])
    assert near_group_tie((x,), {"axes": (1,)}, 1e-3)
    assert not near_group_tie((x,), {"axes": (0,)}, 1e-3)
    relu = get("relu").kinks[0]
    assert relu((np.array([0.0009]),), {}, 1e-3) and not relu((np.array([0.0011]),), {}, 1e-3)


def test_every_nonsmooth_primitive_declares_kinks() -> None:
    assert [n for n, p in PRIMITIVES.items() if not p.smooth and not p.kinks] == []
