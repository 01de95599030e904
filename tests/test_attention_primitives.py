"""layernorm, causal_softmax and attention against plain NumPy references, and their edges.

test_gradcheck holds their backward rules to central differences; here: values and gradients
against straightforward float64 NumPy (layernorm's through its full Jacobian), in float32 and
float64; layernorm's constant rows and large offsets; causal_softmax's mask; attention against
the unfused chain of primitives it replaces (to 1e-12 in float64); backward without the saved
residual; NaN; empty arrays; every shape-rule error; and a plan through the Executable.
"""

from __future__ import annotations

import numpy as np
import pytest

from dp.interpreter.core.execute import Executable
from dp.interpreter.core.plan import ParamSpec, Plan, typecheck_plan
from dp.interpreter.core.primitives import apply_backward, apply_forward, get
from gradcheck import check_grads, plan_loss_and_vjp


def _run(name, inputs, g=None, wants=None, **params):
    prim = get(name)
    out, saved = apply_forward(prim, *inputs, **params)
    if g is None:
        g = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    wants = (True,) * len(inputs) if wants is None else wants
    return out, saved, apply_backward(prim, g, out, tuple(inputs), wants, saved, **params)


def _t(x):
    return np.swapaxes(x, -1, -2)


def ref_layernorm(x, eps=1e-5):
    x = x.astype(np.float64)
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps)


def ref_layernorm_grad(x, g, eps=1e-5):
    """J^T g row by row, J = (I - 1/d - y y^T / d) / sqrt(var + eps) the full Jacobian."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    d = x.shape[-1]
    y = ref_layernorm(x, eps)
    c = x - x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((c * c).mean(-1, keepdims=True) + eps)
    jac = (np.eye(d) - 1 / d - y[..., :, None] * y[..., None, :] / d) * rstd[..., None]
    return np.einsum("...ij,...i->...j", jac, g)


def ref_softmax(x):
    m = np.max(x, -1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(-1, keepdims=True)


def causal_mask(x):
    n = x.shape[-1]
    return np.where(np.tril(np.ones((n, n), bool)), x, -np.inf)


def ref_causal_softmax(x):
    return ref_softmax(causal_mask(x.astype(np.float64)))


def ref_attention(q, k, v, g, scale, causal):
    """(out, (dq, dk, dv)) in float64 from the textbook formulas."""
    q, k, v, g = (a.astype(np.float64) for a in (q, k, v, g))
    s = q @ _t(k) * scale
    p = ref_softmax(causal_mask(s) if causal else s)
    dp = g @ _t(v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return p @ v, (ds @ k * scale, _t(ds) @ q * scale, _t(p) @ g)


def unfused_attention(q, k, v, g, scale, causal):
    """(out, (dq, dk, dv)) of the chain the lowering replaces, one registered primitive at a time:
    matmul(q, transpose(k)), mul by scale, (causal_)softmax, matmul by v, then back."""
    perm = tuple(range(q.ndim - 2)) + (q.ndim - 1, q.ndim - 2)
    sm = get("causal_softmax" if causal else "softmax")
    kt = get("transpose").forward(k, axes=perm)
    s = get("matmul").forward(q, kt)
    c = np.asarray(scale, dtype=q.dtype)
    s2 = get("mul").forward(s, c)
    p = sm.forward(s2)
    out = get("matmul").forward(p, v)
    dp, dv = get("matmul").backward(g, out, (p, v), (True, True))
    (ds2,) = sm.backward(dp, p, (s2,), (True,))
    ds, _ = get("mul").backward(ds2, s2, (s, c), (True, False))
    dq, dkt = get("matmul").backward(ds, s, (q, kt), (True, True))
    (dk,) = get("transpose").backward(dkt, kt, (k,), (True,), axes=perm)
    return out, (dq, dk, dv)


# ---------------------------------------------------------------------------------------------
# layernorm


@pytest.mark.parametrize("shape", [(16, 10), (2, 3, 5), (1, 1), (3, 257), (7,), (32, 64, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_vs_reference(shape, dtype) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    out, rstd, (dx,) = _run("layernorm", (x,), g)
    assert out.dtype == dx.dtype == dtype and rstd.shape == shape[:-1]
    tol = {"atol": 1e-12, "rtol": 1e-10} if dtype == np.float64 else {"atol": 1e-5, "rtol": 1e-4}
    np.testing.assert_allclose(out, ref_layernorm(x), **tol)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True)
    np.testing.assert_allclose(rstd, 1 / np.sqrt((xc * xc).mean(-1) + 1e-5), **tol)
    if shape[-1] <= 257 and np.prod(shape) <= 1000:
        np.testing.assert_allclose(dx, ref_layernorm_grad(x, g), **tol)


def test_layernorm_eps_and_views() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8))
    for view in (x.T, x[:, ::2]):
        np.testing.assert_allclose(get("layernorm").forward(view, eps=0.5)[0],
                                   ref_layernorm(view, 0.5), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_constant_row_is_zero_with_finite_gradient(dtype) -> None:
    x = np.array([[0.1] * 5, [-3e4] * 5, [7.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]], dtype)
    g = np.arange(20, dtype=dtype).reshape(4, 5)
    out, _, (dx,) = _run("layernorm", (x,), g)
    np.testing.assert_array_equal(out[:3], 0)
    assert np.isfinite(dx).all()
    # With zero variance the Jacobian is (I - 1/d) / sqrt(eps).
    np.testing.assert_allclose(dx[:3], (g[:3] - g[:3].mean(-1, keepdims=True)) / np.sqrt(1e-5),
                               rtol=1e-6)


def test_layernorm_large_offset_in_float32() -> None:
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(0, 1e-2, (64, 32))).astype(np.float32)
    out, _, (dx,) = _run("layernorm", (x,), np.ones_like(x))
    ref = ref_layernorm(x)          # of the same float32 values, in float64
    assert np.abs(ref).max() > 1    # the noise survived the rounding to float32
    np.testing.assert_allclose(out, ref, atol=1e-3)
    np.testing.assert_allclose(dx, ref_layernorm_grad(x, np.ones_like(x)), atol=1e-3)


def test_layernorm_backward_without_saved() -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    g = np.random.default_rng(1).standard_normal(x.shape)
    prim = get("layernorm")
    out, rstd = prim.forward(x, eps=1e-3)
    with_saved = prim.backward(g, out, (x,), (True,), saved=rstd, eps=1e-3)
    without = prim.backward(g, out, (x,), (True,), saved=None, eps=1e-3)
    np.testing.assert_array_equal(with_saved[0], without[0])


# ---------------------------------------------------------------------------------------------
# causal_softmax


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (2, 3, 7, 7), (4, 64, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_causal_softmax_vs_reference(shape, dtype) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, _, (dx,) = _run("causal_softmax", (x,), g)
    ref = ref_causal_softmax(x)
    ref_dx = ref * (g - (g * ref).sum(-1, keepdims=True))
    tol = {"atol": 1e-12, "rtol": 1e-10} if dtype == np.float64 else {"atol": 1e-6, "rtol": 1e-4}
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, ref, **tol)
    np.testing.assert_allclose(dx, ref_dx, **tol)


def test_causal_softmax_mask() -> None:
    x = np.random.default_rng(0).standard_normal((2, 6, 6)).astype(np.float32) * 5
    y, _, (dx,) = _run("causal_softmax", (x,))
    upper = ~np.tril(np.ones((6, 6), bool))
    assert (y[:, upper] == 0).all() and (dx[:, upper] == 0).all()
    np.testing.assert_array_equal(y[:, 0], [[1, 0, 0, 0, 0, 0]] * 2)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-6)
    # The masked entries do not matter, whatever they hold.
    x2 = np.where(upper, np.float32(1e30), x)
    np.testing.assert_array_equal(get("causal_softmax").forward(x2), y)


def test_causal_softmax_is_softmax_of_the_masked_scores() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5, 5))
    np.testing.assert_allclose(get("causal_softmax").forward(x),
                               get("softmax").forward(causal_mask(x)), atol=1e-15)


def test_causal_softmax_large_and_special_values() -> None:
    x = np.array([[[1e4, 0, 0], [1e4, 1e4 + 1, 0], [-np.inf, 3e38, -3e38]]], np.float32)
    y = get("causal_softmax").forward(x)
    e = np.exp(-1.0)
    np.testing.assert_allclose(y[0], [[1, 0, 0], [e / (1 + e), 1 / (1 + e), 0], [0, 1, 0]],
                               rtol=1e-6)
    nan = np.array([[[0, np.nan], [np.nan, 0]]], np.float32)
    y = get("causal_softmax").forward(nan)
    assert y[0, 0].tolist() == [1, 0] and np.isnan(y[0, 1]).all()


# ---------------------------------------------------------------------------------------------
# attention


ATTENTION = [  # q, k, v shapes
    ((4, 5), (4, 5), (4, 3)),
    ((1, 1), (1, 1), (1, 1)),
    ((2, 3, 7, 4), (2, 3, 7, 4), (2, 3, 7, 6)),
    ((32, 4, 64, 16), (32, 4, 64, 16), (32, 4, 64, 16)),   # the reference workload
]


def _qkvg(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    qs, ks, vs = shapes
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in (qs, ks, vs))
    return q, k, v, rng.standard_normal(qs[:-1] + vs[-1:]).astype(dtype)


# Causal attention needs as many queries as keys, so the cross-attention shape is not causal.
@pytest.mark.parametrize("shapes,causal",
                         [(s, c) for s in ATTENTION for c in (True, False)]
                         + [(((2, 3, 4), (2, 6, 4), (2, 6, 5)), False)], ids=str)
def test_attention_matches_the_unfused_chain(shapes, causal) -> None:
    scale = 1 / np.sqrt(shapes[0][-1]).item()
    q, k, v, g = _qkvg(shapes, np.float64)
    out, p, grads = _run("attention", (q, k, v), g, scale=scale, causal=causal)
    for want_out, want_grads in (unfused_attention(q, k, v, g, scale, causal),
                                 ref_attention(q, k, v, g, scale, causal)):
        np.testing.assert_allclose(out, want_out, atol=1e-12, rtol=0)
        for got, want in zip(grads, want_grads, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
    assert p.shape == q.shape[:-2] + (1,) + q.shape[-2:-1] + k.shape[-2:-1]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shapes", ATTENTION, ids=str)
def test_attention_float32(shapes, causal) -> None:
    q, k, v, g = _qkvg(shapes, np.float32)
    out, _, grads = _run("attention", (q, k, v), g, scale=0.25, causal=causal)
    want_out, want_grads = ref_attention(q, k, v, g, 0.25, causal)
    assert out.dtype == np.float32 and all(d.dtype == np.float32 for d in grads)
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-4)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_attention_wants_and_recompute() -> None:
    q, k, v, g = _qkvg(ATTENTION[2], np.float64)
    prim = get("attention")
    params = {"scale": 0.5, "causal": True}
    out, p = prim.forward(q, k, v, **params)
    full = prim.backward(g, out, (q, k, v), (True,) * 3, saved=p, **params)
    again = prim.backward(g, out, (q, k, v), (True,) * 3, saved=None, **params)
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for wants in [(True, False, False), (False, True, False), (False, False, True)]:
        part = prim.backward(g, out, (q, k, v), wants, saved=p, **params)
        for w, a, b in zip(wants, part, full, strict=True):
            assert (a is None) if not w else np.array_equal(a, b)


def _split(x, heads):
    return np.swapaxes(x.reshape(x.shape[:-1] + (heads, -1)), -3, -2)


def _join(x):
    x = np.swapaxes(x, -3, -2)
    return x.reshape(x.shape[:-2] + (-1,))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("heads, shapes", [
    (4, ((2, 7, 8), (2, 7, 8), (2, 7, 12))),
    (2, ((3, 4), (3, 4), (3, 2))),
    (3, ((2, 2, 4, 6), (2, 2, 4, 6), (2, 2, 4, 3))),
    (1, ((2, 4, 3), (2, 4, 3), (2, 4, 5))),
])
def test_attention_heads_is_attention_of_the_split_heads(heads, shapes, causal) -> None:
    """heads = H on [..., n, H*e] is split_heads, one attention per head, join_heads."""
    q, k, v, g = _qkvg(shapes, np.float64)
    out, p, grads = _run("attention", (q, k, v), g, scale=0.4, causal=causal, heads=heads)
    want, want_grads = ref_attention(*(_split(a, heads) for a in (q, k, v, g)), 0.4, causal)
    np.testing.assert_allclose(out, _join(want), atol=1e-12, rtol=0)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, _join(want), atol=1e-12, rtol=0)
    assert p.shape == q.shape[:-2] + (heads,) + q.shape[-2:-1] + k.shape[-2:-1]
    again = get("attention").backward(g, out, (q, k, v), (True,) * 3, saved=None, scale=0.4,
                                      causal=causal, heads=heads)
    for a, b in zip(grads, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_attention_causal_ignores_the_future() -> None:
    q, k, v, _ = _qkvg(((5, 3), (5, 3), (5, 2)), np.float64)
    out = get("attention").forward(q, k, v, scale=1.0, causal=True)[0]
    k2, v2 = k.copy(), v.copy()
    k2[3:], v2[3:] = 100.0, -100.0
    out2 = get("attention").forward(q, k2, v2, scale=1.0, causal=True)[0]
    np.testing.assert_array_equal(out[:3], out2[:3])
    np.testing.assert_allclose(out[0], v[0], atol=1e-15)


@pytest.mark.parametrize("name, shapes, params", [
    ("layernorm", [(0, 5)], {}),
    ("causal_softmax", [(0, 3, 3)], {}),
    ("attention", [(0, 2, 3, 4)] * 3, {"scale": 0.5, "causal": True}),
    ("attention", [(2, 0, 4), (2, 3, 4), (2, 3, 5)], {"scale": 0.5, "causal": False}),
    ("attention", [(2, 3, 0), (2, 3, 0), (2, 3, 5)], {"scale": 0.5, "causal": True}),
])
def test_empty_arrays(name, shapes, params) -> None:
    inputs = tuple(np.zeros(s, np.float32) for s in shapes)
    out, _, grads = _run(name, inputs, **params)
    assert out.shape == get(name).shape(*shapes, **params)
    assert [d.shape for d in grads] == [x.shape for x in inputs]


# ---------------------------------------------------------------------------------------------
# Shape rules


@pytest.mark.parametrize("name, shapes, params, words", [
    ("layernorm", ((),), {}, "layernorm: needs a non-empty last axis, got []"),
    ("layernorm", ((3, 0),), {}, "layernorm: needs a non-empty last axis, got [3, 0]"),
    ("causal_softmax", ((2, 3, 4),), {},
     "causal_softmax: needs [..., n, n] with n >= 1, got [2, 3, 4]"),
    ("causal_softmax", ((4,),), {}, "got [4]"),
    ("causal_softmax", ((2, 0, 0),), {}, "got [2, 0, 0]"),
    ("attention", ((2, 3, 4), (2, 3, 5), (2, 3, 5)), {"scale": 1.0, "causal": False},
     ("attention: expects q [..., n, e], k [..., m, e], v [..., m, f] with the same leading axes "
      "and m >= 1, got q [2, 3, 4], k [2, 3, 5], v [2, 3, 5]")),
    ("attention", ((2, 3, 4), (2, 5, 4), (2, 5, 4)), {"scale": 1.0, "causal": True},
     "attention: causal needs as many queries as keys (n == m), got q [2, 3, 4] and k [2, 5, 4]"),
    ("attention", ((2, 3, 4), (3, 3, 4), (3, 3, 4)), {"scale": 1.0, "causal": False},
     "got q [2, 3, 4], k [3, 3, 4], v [3, 3, 4]"),
    ("attention", ((3, 4), (5, 4), (6, 2)), {"scale": 1.0, "causal": False},
     "got q [3, 4], k [5, 4], v [6, 2]"),
    ("attention", ((4,), (4,), (4,)), {"scale": 1.0, "causal": False}, "got q [4]"),
    ("attention", ((2, 3, 4), (2, 0, 4), (2, 0, 4)), {"scale": 1.0, "causal": False},
     "m >= 1"),
    ("attention", ((2, 3, 6), (2, 3, 6), (2, 3, 6)), {"scale": 1.0, "causal": False, "heads": 4},
     "attention: 4 heads do not divide q [2, 3, 6] and v [2, 3, 6]"),
    ("attention", ((2, 3, 8), (2, 3, 8), (2, 3, 6)), {"scale": 1.0, "causal": False, "heads": 4},
     "do not divide"),
])
def test_shape_errors(name, shapes, params, words) -> None:
    with pytest.raises(ValueError) as err:
        get(name).shape(*shapes, **params)
    assert str(err.value).startswith(f"{name}: ") and words in str(err.value)


# ---------------------------------------------------------------------------------------------
# Through the executor: layernorm -> three linears -> causal attention -> sum


def _attention_plan(batch=2, n=4, d=3):
    plan = Plan()
    x = plan.new_var((batch, n, d), True)
    plan.inputs.append(x)
    for path in ("Wq", "Wk", "Wv"):
        plan.params[path] = plan.new_var((d, d), False)
        plan.specs[path] = ParamSpec(path, (d, d), "zeros", (), None)
    h = plan.add("layernorm", (x,), eps=1e-5)
    q, k, v = (plan.add("linear", (h, plan.params[w])) for w in ("Wq", "Wk", "Wv"))
    a = plan.add("attention", (q, k, v), scale=0.5, causal=True)
    assert a.shape == (batch, n, d) and a.batched
    plan.outputs.append(plan.add("sum", (a,), batched=False, axes=(0, 1, 2)))
    typecheck_plan(plan)
    return plan


def test_executor_runs_an_attention_plan() -> None:
    plan = _attention_plan()
    ex = Executable(plan, np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3))
    params = {k: rng.uniform(-1, 1, v.shape) for k, v in plan.params.items()}
    loss, vjp, names = plan_loss_and_vjp(plan, ex, x)

    h = ref_layernorm(x)
    q, k, v = (h @ params[w].T for w in names)
    want = ref_attention(q, k, v, np.zeros_like(v), 0.5, True)[0].sum()
    assert loss(*params.values()) == pytest.approx(want, rel=1e-12)
    check_grads(loss, tuple(params.values()), vjp, rtol=1e-5, name="attention plan")
