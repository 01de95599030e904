"""The faster AlexNet forward: strided im2col through the planes' phases, conv2d with a fused
relu (fuse.py's `relu(conv2d(...))` -> `conv2d(...; relu)`), the Winograd filter transforms
kept while the weights are unchanged, and linear's few-rows product as (W @ x.T).T.

The phased im2col against a NumPy slicing reference (strides 2-5, paddings past the stride,
kernels smaller than the stride, planes that do not divide evenly, garbage in the buffer);
the fused relu against relu of the plain convolution on every path (columns saved, chunked,
grouped, strided, Winograd) in float64 exactly, its backward against the unfused chain's,
central differences, NaN, and the fusion itself (only when the conv's output has no other use).
"""

from __future__ import annotations

import numpy as np
import pytest
from dp.dsl import load_text
from dp.interpreter.core.kernels import conv as K
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import apply_backward, apply_forward, conv, get
from gradcheck import Arg, check_primitive, sample_inputs
from test_conv_paths import ref_columns
from test_conv_primitives import ref_conv

# (x shape, kh, kw, stride, ph, pw)
STRIDED = [
    ((2, 3, 23, 21), 11, 11, 4, 2, 2),     # AlexNet's first layer, small
    ((1, 2, 9, 10), 3, 3, 2, 1, 1),
    ((2, 1, 8, 7), 1, 1, 2, 0, 0),         # kernel smaller than the stride
    ((1, 2, 7, 9), 2, 5, 3, 4, 0),         # padding past the stride
    ((1, 1, 12, 13), 5, 3, 5, 1, 2),
    ((3, 1, 2, 2), 3, 3, 2, 1, 1),         # a single output
]


@pytest.mark.parametrize("xs, kh, kw, stride, ph, pw", STRIDED)
def test_phased_im2col_matches_numpy(xs, kh, kw, stride, ph, pw) -> None:
    x = np.random.default_rng(0).standard_normal(xs)
    want = ref_columns(x, kh, kw, stride, ph, pw)
    buf = np.full(want.size + 5, np.nan)
    got = conv.columns(x, kh, kw, stride, ph, pw, buf)
    np.testing.assert_array_equal(got, want)
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(conv.columns(x32, kh, kw, stride, ph, pw),
                                  ref_columns(x32, kh, kw, stride, ph, pw).astype(np.float32))


def test_phased_im2col_carries_nan_and_inf_to_their_windows_only() -> None:
    x = np.zeros((1, 1, 10, 10))
    x[0, 0, 3, 6], x[0, 0, 8, 1] = np.nan, -np.inf
    got = conv.columns(x, 3, 3, 2, 1, 1)
    want = ref_columns(x, 3, 3, 2, 1, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isnan(got).sum() == 2 and np.isinf(got).sum() == 2


def test_winograd_outputs_relu_is_relu_of_the_outputs() -> None:
    rng = np.random.default_rng(1)
    m, bias = rng.standard_normal((16, 3, 2 * 9)), rng.standard_normal(3)
    m[0, 1, 4] = np.nan
    plain, fused = np.empty((2, 3, 5, 6)), np.empty((2, 3, 5, 6))
    K.winograd_outputs(m, bias, plain, 3, 3)
    K.winograd_outputs(m, bias, fused, 3, 3, True)
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))   # NaN stays NaN
    assert np.isnan(fused).any() and (fused == 0).any()


@pytest.fixture(params=["saved", "chunked", "winograd"])
def path(request, monkeypatch) -> str:
    if request.param != "saved":
        monkeypatch.setattr(conv, "SAVE_MAX", 0)
        monkeypatch.setattr(conv, "CHUNK_COLS", 1)
    if request.param == "winograd":
        monkeypatch.setattr(conv, "WINOGRAD_MIN", 1)
    return request.param


# (x shape, w shape, stride, padding, groups)
RELU = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),
    ((3, 2, 11, 9), (3, 2, 5, 5), 4, 2, 1),
    ((2, 4, 6, 7), (6, 2, 3, 3), 1, 1, 2),
]


@pytest.mark.parametrize("xs, ws, stride, padding, groups", RELU)
def test_fused_relu_is_relu_of_the_convolution(path, xs, ws, stride, padding, groups) -> None:
    rng = np.random.default_rng(2)
    x, w, b = (rng.uniform(-2, 2, s) for s in (xs, ws, ws[:1]))
    p = {"stride": stride, "padding": padding, "groups": groups}
    prim = get("conv2d")
    out, saved = apply_forward(prim, x, w, b, relu=True, **p)
    want = ref_conv(x, w, b, stride, padding, groups)
    np.testing.assert_allclose(out, np.maximum(want, 0), rtol=1e-12, atol=1e-12)
    assert (out == 0).mean() > 0.2 and prim.shape(xs, ws, ws[:1], relu=True, **p) == out.shape
    # The backward is the plain conv2d's of g zeroed where the output is not positive.
    g = rng.standard_normal(out.shape)
    got = apply_backward(prim, g, out, (x, w, b), (True,) * 3, saved, relu=True, **p)
    plain, psaved = apply_forward(prim, x, w, b, **p)
    ref = apply_backward(prim, np.where(plain > 0, g, 0), plain, (x, w, b), (True,) * 3,
                         psaved, **p)
    for a, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs, ws, stride, padding, groups", RELU)
def test_fused_relu_gradcheck(path, xs, ws, stride, padding, groups) -> None:
    prim = get("conv2d")
    params = {"stride": stride, "padding": padding, "groups": groups, "relu": True}
    inputs = sample_inputs(prim, [Arg(xs), Arg(ws), Arg(ws[:1])], params, seed=3)
    check_primitive(prim, inputs, params, rtol=1e-5)


def test_fused_relu_kink_is_the_preactivation_near_zero() -> None:
    prim = get("conv2d")
    x, w, b = np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1)), np.array([-1.0])
    assert prim.kinks[0]((x, w, b), {"stride": 1, "padding": 0, "relu": True}, 1e-6)
    assert not prim.kinks[0]((x, w, b), {"stride": 1, "padding": 0}, 1e-6)
    b = np.array([-0.5])
    assert not prim.kinks[0]((x, w, b), {"stride": 1, "padding": 0, "relu": True}, 1e-6)


def test_fused_relu_keeps_nan_and_float32(path) -> None:
    rng = np.random.default_rng(4)
    x, w, b = (rng.uniform(-2, 2, s).astype(np.float32) for s in ((2, 3, 6, 6), (4, 3, 3, 3),
                                                                 (4,)))
    x[1, 2, 3, 3] = np.nan
    out = get("conv2d").forward(x, w, b, stride=1, padding=1, relu=True)[0]
    plain = get("conv2d").forward(x, w, b, stride=1, padding=1)[0]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(plain))
    assert np.isnan(out[1]).any() and not np.isnan(out[0]).any()
    np.testing.assert_array_equal(out, np.maximum(plain, 0))


NET = """
Net: R^(2, 9, 9) -> R^(3, 9, 9)
Net(x) = Conv(x; c2 = 3)
Both: R^(2, 9, 9) -> R^(3, 9, 9)
Both(x) =
  y = conv2d(x, W, b)
  relu(y) + y
  param W: R^(3, 2, 3, 3) ~ fan_in
  param b: R^3 ~ zeros
"""


def test_fuse_folds_relu_into_a_conv_whose_output_has_no_other_use() -> None:
    tprog = load_text(NET)
    eqns = lower(tprog, "Net", 2).eqns
    assert [e.prim for e in eqns] == ["conv2d"] and dict(eqns[0].params)["relu"] is True
    assert [e.prim for e in lower(tprog, "Net", 2, fused=False).eqns] == ["conv2d", "relu"]
    prims = [e.prim for e in lower(tprog, "Both", 2).eqns]   # y is used twice: kept
    assert prims == ["conv2d", "relu", "add"]
    assert "relu" not in dict(lower(tprog, "Both", 2).eqns[0].params)


def test_fused_model_computes_and_differentiates_as_the_unfused_plan() -> None:
    model = Model(load_text(NET), "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(5).standard_normal((2, 2, 9, 9))
    got = model.predict(x)
    params = {p.split(".")[-1]: a for p, a in model.params.items()}
    want = np.maximum(ref_conv(x, params["W"], params["b"], 1, 1), 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The Winograd filter transforms kept between calls


def test_filter_transform_is_reused_only_for_the_same_bits() -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    u = conv.filter_transform(w)
    want = np.empty_like(u)
    K.winograd_filters(w, want)
    np.testing.assert_array_equal(u, want)
    assert not u.flags.writeable
    assert conv.filter_transform(w) is u                      # unchanged: kept
    assert conv.filter_transform(w.copy()) is not u           # another array: its own
    for change in (lambda a: a.__setitem__((3, 2, 2, 2), a[3, 2, 2, 2] + 1e-3),
                   lambda a: a.__setitem__((0, 0, 0, 0), np.nan),
                   lambda a: a.fill(0.0), lambda a: a.__imul__(-1)):   # -0 after 0
        before = conv.filter_transform(w)
        change(w)                                             # in place, as an update does
        after = conv.filter_transform(w)
        assert after is not before
        K.winograd_filters(w, want)
        np.testing.assert_array_equal(after, want)


def test_winograd_after_an_in_place_update_uses_the_new_weights(monkeypatch) -> None:
    monkeypatch.setattr(conv, "WINOGRAD_MIN", 1)
    monkeypatch.setattr(conv, "SAVE_MAX", 0)
    rng = np.random.default_rng(7)
    x, w, b = (rng.uniform(-2, 2, s) for s in ((2, 3, 6, 5), (4, 3, 3, 3), (4,)))
    for step in range(3):
        out = get("conv2d").forward(x, w, b, stride=1, padding=1)[0]
        np.testing.assert_allclose(out, ref_conv(x, w, b, 1, 1), rtol=1e-12, atol=1e-12)
        w -= 0.1 * rng.standard_normal(w.shape)               # an optimizer step, in place


def test_filter_transforms_kept_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(conv, "_TRANSFORMS", {})
    ws = [np.full((2, 2, 3, 3), float(i)) for i in range(conv.TRANSFORMS_KEPT + 3)]
    for w in ws:
        conv.filter_transform(w)
    assert len(conv._TRANSFORMS) == conv.TRANSFORMS_KEPT
    assert conv.filter_transform(ws[-1]) is conv._TRANSFORMS[
        (ws[-1].ctypes.data, ws[-1].shape, ws[-1].strides, ws[-1].dtype.str)][1]


# ---------------------------------------------------------------------------------------------
# AlexNet's dense layers: a few rows through a large W as (W @ x.T).T


@pytest.mark.parametrize("rows", [1, 2, 8, 32, 33])
@pytest.mark.parametrize("extra", [{}, {"bias": True}, {"bias": True, "relu": True}])
def test_linear_few_rows_large_w_matches_numpy(monkeypatch, rows, extra) -> None:
    from dp.interpreter.core.primitives import linalg
    monkeypatch.setattr(linalg, "LARGE_W", 64)      # the path at a small size
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((rows, 12)), rng.standard_normal((7, 12)), rng.standard_normal(7)
    args = (x, w, b) if extra.get("bias") else (x, w)
    out = linalg.linear_forward(*args, relu=extra.get("relu", False))
    want = x @ w.T + (b if extra.get("bias") else 0)
    if extra.get("relu"):
        want = np.maximum(want, 0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    assert out.flags.c_contiguous and not np.shares_memory(out, x)  # fresh (execute.FRESH)
    x3 = rng.standard_normal((2, rows, 12)).astype(np.float32)  # folded leading axes
    out3 = linalg.linear_forward(x3, w.astype(np.float32))
    assert out3.shape == (2, rows, 7) and out3.dtype == np.float32
    np.testing.assert_allclose(out3, x3 @ w.T.astype(np.float32), rtol=1e-5, atol=1e-5)
