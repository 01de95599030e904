"""Optimizer steps and gradient clipping.

The references below are written from the algorithm boxes in the torch.optim documentation
(SGD, Adam, AdamW), in float64 NumPy, independently of the kernels.
"""

import numpy as np
import pytest

from dp.dsl.errors import DpError, Span
from dp.interpreter.core.optim import Optimizer, clip_grad_norm, make_optimizer

N = 50


def problem(seed=0, steps=3, n=N):
    """Parameters and one random gradient per step, exactly representable in float32."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32).astype(np.float64)
    grads = [rng.standard_normal(n).astype(np.float32).astype(np.float64) for _ in range(steps)]
    return p, grads


# ---- references (torch.optim docs) ------------------------------------------------------

def ref_sgd(p, grads, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    p, b = p.copy(), None
    for g in grads:
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            b = g.copy() if b is None else momentum * b + g        # dampening 0
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p, b


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    p = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * weight_decay * p                          # AdamW
        elif weight_decay != 0:
            g = g + weight_decay * p                               # Adam's L2 term
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def run(opt: Optimizer, p, grads, dtype=np.float64):
    p = p.astype(dtype)
    state = opt.init_state(p.size, dtype)
    for t, g in enumerate(grads, start=1):
        g = g.astype(dtype)
        g_before = g.copy()
        opt.update(p, g, state, t)
        assert np.array_equal(g, g_before), "update must not change the gradient"
    return p, state


def close(actual, expected, rtol):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)


# ---- target 11: exact steps in float64 ----------------------------------------------------

SGD_CASES = [
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=1),
    dict(lr=0.05, momentum=0.5, weight_decay=1e-3, nesterov=1),
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.1),
]


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("args", SGD_CASES, ids=str)
def test_sgd_matches_reference(args, steps):
    p0, grads = problem(steps=steps)
    p, state = run(make_optimizer("sgd", args), p0, grads)
    p_ref, b_ref = ref_sgd(p0, grads, args["lr"], args.get("momentum", 0.0),
                           args.get("weight_decay", 0.0), bool(args.get("nesterov", 0)))
    close(p, p_ref, 1e-7)
    if args.get("momentum", 0):
        close(state["momentum"], b_ref, 1e-7)
    else:
        assert state == {}


ADAM_CASES = [
    ("adam", {}, {}),
    ("adam", dict(lr=3e-3, weight_decay=0.1), dict(lr=3e-3, weight_decay=0.1)),
    ("adam", dict(lr=0.1, beta1=0.5, beta2=0.9, eps=1e-3),
     dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3)),
    ("adamw", {}, dict(weight_decay=0.01, decoupled=True)),
    ("adamw", dict(lr=3e-3, weight_decay=0.5), dict(lr=3e-3, weight_decay=0.5, decoupled=True)),
]


@pytest.mark.parametrize("name,args,ref_args", ADAM_CASES, ids=lambda c: str(c))
def test_adam_matches_reference(name, args, ref_args):
    p0, grads = problem(steps=3)
    grads[0][:5] = 0.0                      # m = v = 0 at t=1: the eps-only denominator
    p, state = run(make_optimizer(name, args), p0, grads)
    p_ref, m_ref, v_ref = ref_adam(p0, grads, **ref_args)
    close(p, p_ref, 1e-7)
    close(state["m"], m_ref, 1e-7)
    close(state["v"], v_ref, 1e-7)


def test_adam_first_step_is_bias_corrected():
    # At t=1 the corrected update is lr * g / (|g| + eps): about lr * sign(g).
    p0, grads = problem(steps=1)
    p, _ = run(make_optimizer("adam", {"lr": 0.01}), p0, grads)
    close(p0 - p, 0.01 * grads[0] / (np.abs(grads[0]) + 1e-8), 1e-7)


# ---- float32 matches float64 --------------------------------------------------------------

@pytest.mark.parametrize("name,args", [
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=1)),
    ("adam", dict(lr=1e-3, weight_decay=0.01)),
    ("adamw", dict(lr=3e-3)),
], ids=str)
def test_float32_matches_float64(name, args):
    p0, grads = problem(steps=3)
    opt = make_optimizer(name, args)
    p64, s64 = run(opt, p0, grads, np.float64)
    p32, s32 = run(opt, p0, grads, np.float32)
    assert p32.dtype == np.float32 and all(a.dtype == np.float32 for a in s32.values())
    # Relative to each array's scale: an entry that the update brings near 0 (p = -6e-4 here
    # after sgd) carries float32 rounding of its order-1 inputs, not of itself.
    for a32, a64 in [(p32, p64)] + [(s32[k], s64[k]) for k in s64]:
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5 * np.abs(a64).max())


# ---- target 10: clipping --------------------------------------------------------------------

def test_clip_keeps_every_step_under_max_norm():
    rng = np.random.default_rng(1)
    opt = make_optimizer("adam", {})
    p = rng.standard_normal(1000).astype(np.float32)
    state = opt.init_state(p.size, np.float32)
    for t in range(1, 21):
        g = (rng.standard_normal(p.size) * rng.uniform(1, 1e4)).astype(np.float32)
        g64 = g.astype(np.float64)
        before = np.linalg.norm(g64)
        assert before > 10
        norm = clip_grad_norm(g, 1.0)
        assert norm == pytest.approx(before, rel=1e-6)
        assert np.linalg.norm(g.astype(np.float64)) <= 1.0 * (1 + 1e-6)
        close(g, g64 * (1.0 / (before + 1e-6)), 1e-6)   # same direction
        opt.update(p, g, state, t)
    assert np.isfinite(p).all()


def test_clip_leaves_small_gradients_alone():
    g = np.array([0.3, -0.4], np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5)
    assert np.array_equal(g, np.array([0.3, -0.4], np.float32))


def test_clip_huge_finite_float32_gradient_is_not_an_error():
    g = np.full(100, 1e30, np.float32)      # the float32 sum of squares would overflow
    assert clip_grad_norm(g, 1.0) == pytest.approx(1e31, rel=1e-6)
    assert np.linalg.norm(g.astype(np.float64)) <= 1.0 * (1 + 1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_nonfinite_gradient_is_an_error_and_changes_nothing(bad):
    g = np.random.default_rng(2).standard_normal(50).astype(np.float32)
    g[17] = bad
    before = g.copy()
    with pytest.raises(DpError) as e:
        clip_grad_norm(g, 1.0)
    assert e.value.kind == "numeric"
    assert "flat index 17" in e.value.message
    assert np.array_equal(g, before, equal_nan=True)


# ---- construction and errors ----------------------------------------------------------------

def test_defaults_follow_torch():
    assert make_optimizer("adam", {}).hyper == dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                                    weight_decay=0.0)
    assert make_optimizer("adamw", {}).hyper["weight_decay"] == 0.01
    assert make_optimizer("sgd", {"lr": 1}).hyper == dict(lr=1.0, momentum=0.0,
                                                          weight_decay=0.0, nesterov=0.0)


def test_state_is_named_flat_arrays():
    assert set(make_optimizer("adam", {}).init_state(7, np.float32)) == {"m", "v"}
    state = make_optimizer("sgd", {"lr": 0.1, "momentum": 0.9}).init_state(7, np.float32)
    assert list(state) == ["momentum"]
    assert state["momentum"].shape == (7,) and state["momentum"].dtype == np.float32
    assert not state["momentum"].any()


SPAN = Span("prog.dp", 3, 13, 3, 40)


@pytest.mark.parametrize("name,args,kind,message", [
    ("rmsprop", {}, "name", "unknown optimizer 'rmsprop'; known: adam, adamw, sgd"),
    ("sgd", {"lr": 0.1, "foo": 1}, "name",
     "sgd has no hyperparameter 'foo'; it has lr, momentum, nesterov, weight_decay"),
    ("adam", {"momentum": 0.9}, "name",
     "adam has no hyperparameter 'momentum'; it has beta1, beta2, eps, lr, weight_decay"),
    ("sgd", {"momentum": 0.9}, "value", "sgd needs a learning rate, e.g. sgd(lr = 0.1)"),
    ("sgd", {"lr": 0}, "value", "sgd lr must be positive, but it is 0"),
    ("adam", {"lr": -1e-3}, "value", "adam lr must be positive, but it is -0.001"),
    ("adam", {"beta1": 1.0}, "value", "adam beta1 must be in [0, 1), but it is 1.0"),
    ("adamw", {"beta2": -0.1}, "value", "adamw beta2 must be in [0, 1), but it is -0.1"),
    ("adam", {"eps": -1}, "value", "adam eps must be non-negative, but it is -1"),
    ("sgd", {"lr": 0.1, "momentum": -0.9}, "value",
     "sgd momentum must be non-negative, but it is -0.9"),
    ("adamw", {"weight_decay": -0.01}, "value",
     "adamw weight_decay must be non-negative, but it is -0.01"),
    ("sgd", {"lr": float("nan")}, "value", "sgd lr must be finite, but it is nan"),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": 2}, "value",
     "sgd nesterov must be 0 or 1, but it is 2"),
    ("sgd", {"lr": 0.1, "nesterov": 1}, "value", "sgd nesterov = 1 needs a positive momentum"),
    ("sgd", {"lr": "fast"}, "type", "sgd lr must be a number, but it is 'fast'"),
])
def test_errors(name, args, kind, message):
    with pytest.raises(DpError) as e:
        make_optimizer(name, args, SPAN)
    assert (e.value.kind, e.value.message, e.value.span) == (kind, message, SPAN)


def test_mismatched_arrays_are_an_internal_error():
    opt = make_optimizer("adam", {})
    p = np.zeros(10)
    state = opt.init_state(10, np.float64)
    with pytest.raises(DpError) as e:
        opt.update(p, np.zeros(9), state, 1)
    assert e.value.kind == "internal"
    sgd = make_optimizer("sgd", {"lr": 0.1, "momentum": 0.9})
    with pytest.raises(DpError) as e:
        sgd.update(p, np.zeros(10), {"momentum": np.zeros(11)}, 1)
    assert e.value.kind == "internal"
