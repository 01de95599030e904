"""conv2d and maxpool2d against plain loops, their saved residuals, and the executor's slots.

test_gradcheck holds their backward rules to central differences; here: forward and backward
against independent float64 loop references on both conv2d paths (whole-batch columns saved,
or one image at a time and rebuilt), first-maximum ties and accumulation of overlapping pool
windows, NaN, every shape-rule error, float32 vs float64, and a conv -> relu -> pool plan run
through the Executable.
"""

from __future__ import annotations

import numpy as np
import pytest

from dp.interpreter.core.execute import Executable
from dp.interpreter.core.plan import ParamSpec, Plan, typecheck_plan
from dp.interpreter.core.primitives import apply_backward, apply_forward, conv, get
from gradcheck import check_grads, check_primitive

# (x shape, w shape, stride, padding, groups): K 1-5, stride 1-3, padding 0-2, H != W, odd
# sizes; rectangular kernels with a padding per axis; grouped and depthwise (groups = C).
CONFIGS = [
    ((2, 3, 7, 5), (4, 3, 3, 3), 2, 1, 1),
    ((1, 1, 5, 5), (2, 1, 1, 1), 1, 0, 1),
    ((3, 2, 9, 6), (3, 2, 5, 5), 3, 2, 1),
    ((2, 2, 6, 6), (2, 2, 3, 3), 1, 0, 1),
    ((2, 3, 11, 10), (5, 3, 4, 4), 2, 2, 1),
    ((32, 1, 8, 8), (16, 1, 3, 3), 1, 1, 1),   # cnn_digits
    ((2, 3, 7, 6), (4, 3, 1, 3), 1, (0, 1), 1),   # 1 x 3, same padding
    ((2, 2, 8, 5), (3, 2, 5, 2), 2, (2, 1), 1),
    ((2, 4, 6, 7), (6, 2, 3, 3), 1, 1, 2),        # two groups
    ((3, 5, 7, 7), (5, 1, 3, 3), 2, 1, 5),        # depthwise
    ((2, 4, 6, 5), (8, 1, 3, 1), 1, (1, 0), 4),   # depthwise, two filters a channel, 3 x 1
]


@pytest.fixture(params=["saved", "streamed"])
def conv_path(request, monkeypatch) -> str:
    """Run conv2d with its columns built for the whole batch and saved, or per image."""
    if request.param == "streamed":
        monkeypatch.setattr(conv, "SAVE_MAX", 0)
    return request.param


def ref_conv(x, w, b, stride, padding, groups=1):
    """out[b, o, i, j] = b[o] + sum over the window of o's group, as plain loops over a
    zero-padded x; padding is one number or (height, width)."""
    nb, c, h, wd = x.shape
    c2, cg, kh, kw = w.shape
    ph, pw = conv.pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // stride + 1, (wd + 2 * pw - kw) // stride + 1
    out = np.zeros((nb, c2, ho, wo))
    for n in range(nb):
        for o in range(c2):
            first = o // (c2 // groups) * cg
            for i in range(ho):
                for j in range(wo):
                    patch = xp[n, first:first + cg, i * stride:i * stride + kh,
                               j * stride:j * stride + kw]
                    out[n, o, i, j] = b[o] + np.sum(patch * w[o])
    return out


def ref_conv_grads(g, x, w, stride, padding, groups=1):
    """(dx, dw, db) of <g, conv(x, w, b)>, accumulated window by window."""
    c2, cg, kh, kw = w.shape
    ph, pw = conv.pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n, o, i, j in np.ndindex(*g.shape):
        first = o // (c2 // groups) * cg
        win = (n, slice(first, first + cg), slice(i * stride, i * stride + kh),
               slice(j * stride, j * stride + kw))
        dw[o] += g[n, o, i, j] * xp[win]
        dxp[win] += g[n, o, i, j] * w[o]
    h, wd = x.shape[2:]
    return dxp[:, :, ph:ph + h, pw:pw + wd], dw, g.sum(axis=(0, 2, 3))


def ref_maxpool(x, size, stride):
    """(out, flat argmax in the plane) with np.argmax's first-maximum rule."""
    nb, nc, h, w = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    out, idx = np.zeros((nb, nc, ho, wo)), np.zeros((nb, nc, ho, wo), np.int64)
    for n, c, i, j in np.ndindex(nb, nc, ho, wo):
        win = x[n, c, i * stride:i * stride + size, j * stride:j * stride + size]
        a, bb = divmod(int(np.argmax(win)), size)
        out[n, c, i, j] = win[a, bb]
        idx[n, c, i, j] = (i * stride + a) * w + j * stride + bb
    return out, idx


def _conv_inputs(xs, ws, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-2, 2, s).astype(dtype) for s in (xs, ws, (ws[0],)))


# ---------------------------------------------------------------------------------------------
# conv2d


@pytest.mark.parametrize("xs, ws, stride, padding, groups", CONFIGS)
def test_conv2d_matches_loops(xs, ws, stride, padding, groups, conv_path) -> None:
    x, w, b = _conv_inputs(xs, ws)
    prim = get("conv2d")
    p = {"stride": stride, "padding": padding, "groups": groups}
    out, saved = apply_forward(prim, x, w, b, **p)
    assert (saved is None) == (conv_path == "streamed")
    assert out.shape == prim.shape(xs, ws, (ws[0],), **p)
    np.testing.assert_allclose(out, ref_conv(x, w, b, stride, padding, groups), rtol=1e-12,
                               atol=1e-12)
    g = np.random.default_rng(1).standard_normal(out.shape)
    got = apply_backward(prim, g, out, (x, w, b), (True, True, True), saved, **p)
    for a, r in zip(got, ref_conv_grads(g, x, w, stride, padding, groups), strict=True):
        assert a.shape == r.shape and a.dtype == np.float64
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_conv2d_gradcheck_streamed(conv_path) -> None:
    x, w, b = _conv_inputs((2, 2, 7, 6), (3, 2, 3, 3), seed=3)
    check_primitive(get("conv2d"), (x, w, b), {"stride": 2, "padding": 1}, rtol=1e-5)


def test_conv2d_skips_dx_when_not_wanted(conv_path) -> None:
    x, w, b = _conv_inputs((3, 2, 6, 6), (4, 2, 3, 3))
    prim = get("conv2d")
    out, saved = apply_forward(prim, x, w, b, stride=1, padding=1)
    g = np.ones_like(out)
    dx, dw, db = apply_backward(prim, g, out, (x, w, b), (False, True, True), saved, stride=1,
                                padding=1)
    assert dx is None and dw.shape == w.shape and db.shape == (4,)
    np.testing.assert_allclose(db, np.full(4, out[0, 0].size * 3))
    dx, dw, db = apply_backward(prim, g, out, (x, w, b), (True, False, False), saved, stride=1,
                                padding=1)
    assert dx.shape == x.shape and dw is None and db is None


def test_conv2d_float32_matches_float64(conv_path) -> None:
    x, w, b = _conv_inputs((4, 3, 13, 11), (8, 3, 5, 5), seed=2)
    prim = get("conv2d")
    outs, grads = [], []
    for dtype in (np.float32, np.float64):
        xs = tuple(a.astype(np.float32).astype(dtype) for a in (x, w, b))
        out, saved = apply_forward(prim, *xs, stride=2, padding=2)
        g = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        assert out.dtype == dtype
        outs.append(out)
        grads.append(apply_backward(prim, g, out, xs, (True,) * 3, saved, stride=2, padding=2))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    for a, r in zip(*grads, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-3)


def test_conv2d_views_and_nan() -> None:
    # A transposed (non-contiguous) x gives the same result as its copy; NaN stays in its
    # window's outputs and goes nowhere else.
    x, w, b = _conv_inputs((2, 2, 6, 6), (3, 2, 3, 3))
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not xt.flags.c_contiguous
    out = get("conv2d").forward(xt, w, b, stride=1, padding=0)[0]
    np.testing.assert_array_equal(out, get("conv2d").forward(x, w, b, stride=1, padding=0)[0])
    x[0, 1, 0, 0] = np.nan
    out = get("conv2d").forward(x, w, b, stride=1, padding=0)[0]
    assert np.isnan(out[0, :, 0, 0]).all()
    assert np.isfinite(out[1]).all() and np.isfinite(out[0, :, 1:, :]).all()


@pytest.mark.parametrize("x, w, b, params, words", [
    ((2, 1, 8), (16, 1, 3, 3), (16,), {}, r"expects x \[B, C, H, W\], w \[C2, C, KH, KW\] and b"),
    ((2, 1, 8, 8), (16, 3, 3), (16,), {}, r"expects x \[B, C, H, W\]"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (16, 1), {}, r"and b \[C2\]"),
    ((2, 3, 8, 8), (16, 1, 3, 3), (16,), {},
     r"x \[2, 3, 8, 8\] has 3 channels but w \[16, 1, 3, 3\] expects 1$"),
    ((2, 6, 8, 8), (16, 2, 3, 3), (16,), {"groups": 2},
     r"has 6 channels but w \[16, 2, 3, 3\] expects 2 per group, 2 groups"),
    ((2, 6, 8, 8), (16, 2, 3, 3), (16,), {"groups": 3}, "3 groups do not divide the 16 output"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (8,), {}, "bias has 8 entries but w .* has 16 output"),
    ((2, 1, 4, 8), (16, 1, 7, 7), (16,), {"padding": 1},
     "7 x 7 kernel with padding 1 does not fit in a 4 x 8 input"),
    ((2, 1, 2, 8), (16, 1, 3, 5), (16,), {"padding": (0, 1)},
     r"3 x 5 kernel with padding \(0, 1\) does not fit in a 2 x 8 input \(output would be 0 x 6"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (16,), {"stride": 0}, "stride >= 1, padding >= 0 and groups"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (16,), {"padding": -1}, "stride >= 1, padding >= 0"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (16,), {"padding": (1, -1)}, "stride >= 1, padding >= 0"),
    ((2, 1, 8, 8), (16, 1, 3, 3), (16,), {"groups": 0}, "groups >= 1, got .* groups 0"),
])
def test_conv2d_shape_errors(x, w, b, params, words) -> None:
    params = {"stride": 1, "padding": 0, **params}
    with pytest.raises(ValueError, match="^conv2d: .*" + words):
        get("conv2d").shape(x, w, b, **params)


def test_conv2d_shape_floors_like_pytorch() -> None:
    shape = get("conv2d").shape
    assert shape((8, 3, 224, 224), (64, 3, 11, 11), (64,), stride=4, padding=2) == (8, 64, 55, 55)
    assert shape((2, 1, 8, 7), (4, 1, 3, 3), (4,), stride=2, padding=0) == (2, 4, 3, 3)
    assert shape((2, 1, 3, 3), (4, 1, 3, 3), (4,), stride=5, padding=0) == (2, 4, 1, 1)
    assert shape((2, 1, 8, 6), (4, 1, 1, 3), (4,), stride=1, padding=(0, 1)) == (2, 4, 8, 6)
    assert shape((2, 8, 8, 8), (8, 1, 3, 3), (8,), stride=2, padding=1, groups=8) == (2, 8, 4, 4)


# ---------------------------------------------------------------------------------------------
# maxpool2d


@pytest.mark.parametrize("shape, size, stride", [
    ((2, 3, 8, 8), 2, 2), ((2, 2, 9, 7), 3, 2), ((1, 2, 5, 6), 2, 1), ((2, 1, 7, 7), 3, 3),
    ((1, 1, 9, 9), 4, 3), ((1, 2, 3, 3), 1, 1),
])
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool2d_matches_loops(shape, size, stride, ties) -> None:
    rng = np.random.default_rng(0)
    # With ties: few distinct values, so most windows hold several maxima.
    x = rng.integers(0, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    out, idx = get("maxpool2d").forward(x, size=size, stride=stride)
    ref, ref_idx = ref_maxpool(x, size, stride)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    assert out.shape == get("maxpool2d").shape(shape, size=size, stride=stride)
    g = rng.standard_normal(out.shape)
    (dx,) = get("maxpool2d").backward(g, out, (x,), (True,), saved=idx, size=size, stride=stride)
    want = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*g.shape):
        want[n, c].flat[ref_idx[n, c, i, j]] += g[n, c, i, j]
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12)


def test_maxpool2d_ties_go_to_the_first_maximum() -> None:
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 5.0, 5.0],
                    [7.0, 7.0, 7.0, 7.0],
                    [7.0, 7.0, 7.0, 7.0]]]])
    out, idx = get("maxpool2d").forward(x, size=2, stride=2)
    np.testing.assert_array_equal(out, [[[[3, 5], [7, 7]]]])
    np.testing.assert_array_equal(idx, [[[[1, 6], [8, 10]]]])
    (dx,) = get("maxpool2d").backward(np.ones((1, 1, 2, 2)), out, (x,), (True,), saved=idx,
                                      size=2, stride=2)
    np.testing.assert_array_equal(dx[0, 0], [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0],
                                             [0, 0, 0, 0]])


def test_maxpool2d_overlapping_windows_add_their_gradients() -> None:
    # The centre of a 5x5 plane is the maximum of all four 3x3 windows at stride 2.
    x = -np.arange(25.0).reshape(1, 1, 5, 5)
    x[0, 0, 2, 2] = 100.0
    out, idx = get("maxpool2d").forward(x, size=3, stride=2)
    assert (out == 100).all() and (idx == 12).all()
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    (dx,) = get("maxpool2d").backward(g, out, (x,), (True,), saved=idx, size=3, stride=2)
    assert dx[0, 0, 2, 2] == 10.0 and np.count_nonzero(dx) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool2d_nan_propagates(dtype) -> None:
    x = np.arange(32, dtype=dtype).reshape(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan   # not the first entry of its window
    x[0, 1, 2, 0] = np.nan   # the first entry of its window
    out, idx = get("maxpool2d").forward(x, size=2, stride=2)
    assert out.dtype == dtype and np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 1, 1, 0])
    assert np.isfinite(out).sum() == 6
    assert idx[0, 0, 0, 0] == 5 and idx[0, 1, 1, 0] == 8


def test_maxpool2d_float32_and_unwanted() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    out, idx = get("maxpool2d").forward(x, size=3, stride=2)
    assert out.dtype == np.float32 and idx.dtype.kind == "i"
    np.testing.assert_array_equal(out, ref_maxpool(x.astype(np.float64), 3, 2)[0])
    (dx,) = get("maxpool2d").backward(np.ones_like(out), out, (x,), (True,), saved=idx, size=3,
                                      stride=2)
    assert dx.dtype == np.float32 and dx.sum() == out.size
    assert get("maxpool2d").backward(np.ones_like(out), out, (x,), (False,), saved=idx, size=3,
                                     stride=2) == (None,)


@pytest.mark.parametrize("x, params, words", [
    ((2, 8, 8), {"size": 2, "stride": 2}, r"expects x \[B, C, H, W\], got \[2, 8, 8\]"),
    ((2, 1, 8, 2), {"size": 3, "stride": 2}, "a 3 x 3 window does not fit in a 8 x 2 input"),
    ((2, 1, 8, 8), {"size": 0, "stride": 2}, "size >= 1 and stride >= 1"),
    ((2, 1, 8, 8), {"size": 2, "stride": 0}, "size >= 1 and stride >= 1"),
])
def test_maxpool2d_shape_errors(x, params, words) -> None:
    with pytest.raises(ValueError, match="^maxpool2d: .*" + words):
        get("maxpool2d").shape(x, **params)


def test_window_tie_predicate() -> None:
    tie = get("maxpool2d").kinks[0]
    x = np.array([[[[5.0, 0.0, 4.0], [1.0, 2.0, 3.0], [6.0, 7.0, 4.0005]]]])
    assert not tie((x,), {"size": 2, "stride": 1}, 1e-3)    # 4 and 4.0005 share no window
    assert not tie((x,), {"size": 3, "stride": 1}, 1e-3)    # 7 leads 6 by 1
    x[0, 0, 0, 0] = 7.0004
    assert tie((x,), {"size": 3, "stride": 1}, 1e-3)
    assert not tie((x,), {"size": 1, "stride": 1}, 1e-3)


# ---------------------------------------------------------------------------------------------
# Through the executor: conv2d -> relu -> maxpool2d -> reshape -> sum, with saved residuals


def _cnn_plan(batch=2, c=2, h=7, w=6, c2=3, k=3):
    plan = Plan()
    x = plan.new_var((batch, c, h, w), True)
    plan.inputs.append(x)
    for path, shape in (("W", (c2, c, k, k)), ("b", (c2,))):
        plan.params[path] = plan.new_var(shape, False)
        plan.specs[path] = ParamSpec(path, shape, "zeros", (), None)
    W, b = plan.params["W"], plan.params["b"]
    h1 = plan.add("conv2d", (x, W, b), stride=1, padding=1)
    assert h1.shape == (batch, c2, h, w)
    h2 = plan.add("relu", (h1,))
    ph, pw = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    h3 = plan.add("maxpool2d", (h2,), size=3, stride=2)
    h4 = plan.add("reshape", (h3,), shape=(batch, -1))
    assert h3.shape == (batch, c2, ph, pw) and h4.shape == (batch, c2 * ph * pw)
    plan.outputs.append(plan.add("sum", (h4,), batched=False, axes=(0, 1)))
    typecheck_plan(plan)
    return plan


def _direct(x, W, b):
    """The same composition, primitive by primitive."""
    h, cols = get("conv2d").forward(x, W, b, stride=1, padding=1)
    r = get("relu").forward(h)
    p, idx = get("maxpool2d").forward(r, size=3, stride=2)
    return float(np.sum(p)), (h, cols, r, p, idx)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_executor_runs_saving_primitives(dtype, conv_path) -> None:
    plan = _cnn_plan()
    ex = Executable(plan, dtype)
    # One extra slot for each of the two saving equations, after the plan's values.
    assert ex.n == plan.next_id + 2
    rng = np.random.default_rng(0)
    params = {"W": rng.uniform(-1, 1, (3, 2, 3, 3)).astype(dtype),
              "b": rng.uniform(-1, 1, 3).astype(dtype)}
    ex.bind(params)
    x = rng.uniform(-2, 2, (2, 2, 7, 6)).astype(dtype)
    vals = ex.forward(x)
    loss, (h, cols, r, p, idx) = _direct(x, params["W"], params["b"])
    assert ex.outputs(vals)[0] == pytest.approx(loss, rel=1e-6)
    saved = [v for v in vals[plan.next_id:]]
    assert (saved[0] is None) == (conv_path == "streamed") and saved[1].dtype.kind == "i"
    np.testing.assert_array_equal(saved[1], idx)
    grads = ex.backward(vals)
    assert grads[plan.inputs[0].id] is None          # x is no parameter: dx never computed
    dW, db = grads[plan.params["W"].id], grads[plan.params["b"].id]
    assert dW.dtype == dtype and db.dtype == dtype
    # Against the primitives' own backward rules, chained by hand...
    gp = np.ones_like(p)
    (gr,) = get("maxpool2d").backward(gp, p, (r,), (True,), saved=idx, size=3, stride=2)
    (gh,) = get("relu").backward(gr, r, (h,), (True,))
    _, dW_ref, db_ref = get("conv2d").backward(gh, h, (x, params["W"], params["b"]),
                                               (False, True, True), saved=cols, stride=1,
                                               padding=1)
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-6)
    np.testing.assert_allclose(db, db_ref, rtol=1e-6)
    if dtype != np.float64:
        return
    # ... and against central differences of the loss in float64.
    def loss_of(W, b):
        ex.bind({"W": W, "b": b})
        return ex.outputs(ex.forward(x))[0]

    def vjp(c, out, wb):
        ex.bind({"W": wb[0], "b": wb[1]})
        g = ex.backward(ex.forward(x), seed=np.asarray(c))
        return g[plan.params["W"].id], g[plan.params["b"].id]

    check_grads(loss_of, (params["W"], params["b"]), vjp, rtol=1e-5, name="cnn plan")


# ---------------------------------------------------------------------------------------------
# conv1d: filters [E, D, K] along a sequence [B, N, D]


def ref_conv1d(x, w, b, stride, padding):
    nb, n, d = x.shape
    e, _, k = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
    no = (n + 2 * padding - k) // stride + 1
    out = np.zeros((nb, no, e))
    for s, o, f in np.ndindex(nb, no, e):
        out[s, o, f] = b[f] + np.sum(xp[s, o * stride:o * stride + k, :].T * w[f])
    return out


@pytest.mark.parametrize("xs, ws, stride, padding", [
    ((2, 7, 3), (4, 3, 3), 1, 1), ((1, 5, 2), (3, 2, 1), 1, 0), ((3, 9, 4), (2, 4, 5), 2, 2),
    ((2, 6, 1), (1, 1, 2), 3, 0),
])
def test_conv1d_matches_loops(xs, ws, stride, padding) -> None:
    x, w, b = _conv_inputs(xs, ws)
    prim = get("conv1d")
    out = prim.forward(x, w, b, stride=stride, padding=padding)
    assert out.shape == prim.shape(xs, ws, (ws[0],), stride=stride, padding=padding)
    np.testing.assert_allclose(out, ref_conv1d(x, w, b, stride, padding), rtol=1e-12,
                               atol=1e-12)
    check_grads(lambda *a: prim.forward(*a, stride=stride, padding=padding), (x, w, b),
                lambda c, o, a: prim.backward(c, o, a, (True,) * 3, stride=stride,
                                              padding=padding), rtol=1e-6, name="conv1d")


def test_conv1d_is_a_k_by_1_conv2d() -> None:
    """The same numbers as conv2d over the sequence laid out as D channels of N x 1."""
    x, w, b = _conv_inputs((2, 9, 3), (5, 3, 3), seed=4)
    out = get("conv1d").forward(x, w, b, stride=2, padding=1)
    img = x.transpose(0, 2, 1)[..., None]
    ref = get("conv2d").forward(img, w[..., None], b, stride=2, padding=(1, 0))[0]
    np.testing.assert_allclose(out, ref[..., 0].transpose(0, 2, 1), rtol=1e-12)


@pytest.mark.parametrize("x, w, b, params, words", [
    ((2, 8), (4, 3, 3), (4,), {}, r"expects x \[B, N, D\], w \[E, D, K\] and b \[E\]"),
    ((2, 8, 2), (4, 3, 3), (4,), {}, r"has vectors of 2 but w \[4, 3, 3\] expects 3"),
    ((2, 8, 3), (4, 3, 3), (5,), {}, "bias has 5 entries but w .* makes 4"),
    ((2, 2, 3), (4, 3, 5), (4,), {}, "a kernel of 5 with padding 0 does not fit in a sequence"),
    ((2, 8, 3), (4, 3, 3), (4,), {"stride": 0}, "stride >= 1 and padding >= 0"),
])
def test_conv1d_shape_errors(x, w, b, params, words) -> None:
    params = {"stride": 1, "padding": 0, **params}
    with pytest.raises(ValueError, match="^conv1d: .*" + words):
        get("conv1d").shape(x, w, b, **params)


# ---------------------------------------------------------------------------------------------
# avgpool2d


@pytest.mark.parametrize("shape, size, stride", [
    ((2, 3, 8, 8), 2, 2), ((2, 2, 9, 7), 3, 2), ((1, 2, 5, 6), 2, 1), ((1, 1, 3, 3), 1, 1),
    ((1, 2, 4, 4), 4, 4),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avgpool2d_matches_loops(shape, size, stride, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    prim = get("avgpool2d")
    out = prim.forward(x, size=size, stride=stride)
    assert out.dtype == dtype and out.shape == prim.shape(shape, size=size, stride=stride)
    g = rng.standard_normal(out.shape).astype(dtype)
    want, dx = np.zeros(out.shape), np.zeros(shape)
    for n, c, i, j in np.ndindex(*out.shape):
        win = (n, c, slice(i * stride, i * stride + size), slice(j * stride, j * stride + size))
        want[n, c, i, j] = x[win].astype(np.float64).mean()
        dx[win] += g[n, c, i, j] / size ** 2
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    (got,) = prim.backward(g, out, (x,), (True,), size=size, stride=stride)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, dx, rtol=tol, atol=tol)
    assert prim.backward(g, out, (x,), (False,), size=size, stride=stride) == (None,)


def test_avgpool2d_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"^avgpool2d: a 3 x 3 window does not fit in a 8 x 2"):
        get("avgpool2d").shape((2, 1, 8, 2), size=3, stride=2)
    with pytest.raises(ValueError, match=r"^avgpool2d: expects x \[B, C, H, W\]"):
        get("avgpool2d").shape((2, 8, 8), size=2, stride=2)
