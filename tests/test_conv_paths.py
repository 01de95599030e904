"""conv2d's kernels and the paths its size picks, against NumPy and plain loops.

The kernels (im2col, its adjoint col2im, the three Winograd transforms) each against an
independent float64 NumPy reference; then the primitive on each path with the thresholds
forced down to small shapes: columns a chunk of images at a time (even and uneven chunks),
and the Winograd F(2x2, 3x3) forward, in float64 to 1e-12 against the loops of
test_conv_primitives, in float32 against float64, with NaN reaching exactly the outputs whose
window holds it, and the backward (always through the columns) against the loops and central
differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from dp.interpreter.core.kernels import conv as K
from dp.interpreter.core.primitives import apply_backward, apply_forward, conv, get
from gradcheck import check_primitive
from test_conv_primitives import ref_conv, ref_conv_grads

# (x shape, kh, kw, stride, ph, pw): stride 1 with the output as wide as x (the shifted-plane
# copy) and not, strides 2-4, padding up to and past the kernel's half, single pixels.
IM2COL = [
    ((2, 3, 7, 6), 3, 3, 1, 1, 1),
    ((32, 1, 8, 8), 3, 3, 1, 1, 1),
    ((2, 2, 5, 9), 5, 5, 1, 2, 2),
    ((1, 2, 6, 5), 3, 1, 1, 0, 0),
    ((2, 1, 6, 6), 1, 3, 1, 2, 1),
    ((1, 2, 3, 4), 3, 3, 1, 3, 1),     # rows wholly in the padding
    ((2, 3, 9, 8), 4, 2, 2, 1, 0),
    ((1, 3, 23, 21), 11, 11, 4, 2, 2),
    ((1, 1, 1, 1), 3, 3, 1, 1, 1),
    ((1, 1, 2, 2), 3, 3, 1, 2, 2),
]


def ref_columns(x, kh, kw, stride, ph, pw):
    """[C*KH*KW + 1, B*Ho*Wo] by slicing the zero-padded images."""
    nb, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
    cols = np.ones((c * kh * kw + 1, nb, ho, wo))
    for ch, i, j in np.ndindex(c, kh, kw):
        cols[(ch * kh + i) * kw + j] = xp[:, ch, i:i + stride * ho:stride,
                                          j:j + stride * wo:stride].reshape(nb, ho, wo)
    return cols.reshape(len(cols), -1)


@pytest.mark.parametrize("xs, kh, kw, stride, ph, pw", IM2COL)
def test_im2col_and_col2im_match_numpy(xs, kh, kw, stride, ph, pw) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs)
    cols = conv.columns(x, kh, kw, stride, ph, pw)
    want = ref_columns(x, kh, kw, stride, ph, pw)
    np.testing.assert_array_equal(cols, want)
    # Into the front of a larger buffer holding garbage: every entry is written.
    buf = np.full(cols.size + 7, np.nan)
    np.testing.assert_array_equal(conv.columns(x, kh, kw, stride, ph, pw, buf), want)
    # col2im is im2col's adjoint: <im2col(x), d> = <x, col2im(d)>, entry by entry.
    d = rng.standard_normal(cols[:-1].shape)
    dx = np.empty_like(x)
    K.col2im(d, dx, kh, kw, stride, ph, pw)
    ref = np.zeros_like(x)
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = 1.0
        ref.flat[k] = np.sum(ref_columns(e.reshape(xs), kh, kw, stride, ph, pw)[:-1] * d)
    np.testing.assert_allclose(dx, ref, rtol=1e-12, atol=1e-12)


def test_im2col_float32_and_nan() -> None:
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    x[1, 0, 2, 3] = np.nan
    cols = conv.columns(x, 3, 3, 1, 1, 1)
    assert cols.dtype == np.float32
    np.testing.assert_array_equal(cols, ref_columns(x, 3, 3, 1, 1, 1).astype(np.float32))
    assert np.isnan(cols).sum() == 9      # the pixel sits in all 9 windows' columns


# ---------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3)

AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)


def _patches(x, ph, pw, th, tw):
    """[B, C, TH, TW, 4, 4]: each tile's input patch, zero outside x."""
    nb, c, h, w = x.shape
    xp = np.zeros((nb, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    win = np.lib.stride_tricks.sliding_window_view(xp, (4, 4), axis=(2, 3))
    return win[:, :, ::2, ::2][:, :, :th, :tw]


def test_winograd_filters_match_numpy() -> None:
    w = np.random.default_rng(2).standard_normal((5, 3, 3, 3))
    u = np.empty((16, 5, 3))
    K.winograd_filters(w, u)
    want = np.einsum("ai,kcij,bj->abkc", G, w, G).reshape(16, 5, 3)
    np.testing.assert_allclose(u, want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("xs, ph, pw", [((2, 3, 7, 6), 1, 1), ((1, 2, 5, 5), 0, 0),
                                        ((2, 1, 4, 9), 2, 0), ((1, 1, 1, 1), 1, 1)])
def test_winograd_transforms_match_numpy(xs, ph, pw) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs)
    nb, c, h, w = xs
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    v = np.empty((16, c, nb * th * tw))
    K.winograd_inputs(x, v, ph, pw, th, tw)
    want = np.einsum("ai,nctsij,bj->abcnts", BT, _patches(x, ph, pw, th, tw), BT)
    np.testing.assert_allclose(v, want.reshape(16, c, -1), rtol=1e-14, atol=1e-14)
    m = rng.standard_normal((16, 4, nb * th * tw))
    bias = rng.standard_normal(4)
    out = np.empty((nb, 4, ho, wo))
    K.winograd_outputs(m, bias, out, th, tw)
    y = np.einsum("ia,abknts,jb->nktisj", AT, m.reshape(4, 4, 4, nb, th, tw), AT)
    want = y.reshape(nb, 4, 2 * th, 2 * tw)[:, :, :ho, :wo] + bias[:, None, None]
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)


@pytest.fixture
def winograd(monkeypatch):
    """Every 3 x 3, stride-1, ungrouped conv2d takes the Winograd forward."""
    monkeypatch.setattr(conv, "SAVE_MAX", 0)
    monkeypatch.setattr(conv, "WINOGRAD_MIN", 1)


def _inputs(xs, ws, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-2, 2, s).astype(dtype) for s in (xs, ws, (ws[0],)))


@pytest.mark.parametrize("xs, c2, padding, tiles", [
    ((2, 3, 7, 6), 4, 1, 512), ((3, 2, 6, 7), 5, 0, 512), ((2, 2, 5, 5), 3, 2, 512),
    ((1, 1, 3, 3), 2, 0, 512), ((3, 2, 8, 5), 2, (1, 0), 512),
    ((5, 2, 6, 6), 3, 1, 18),           # chunks of 2, 2 and 1 images
])
def test_winograd_forward_matches_loops(winograd, monkeypatch, xs, c2, padding, tiles) -> None:
    monkeypatch.setattr(conv, "WINOGRAD_TILES", tiles)
    x, w, b = _inputs(xs, (c2, xs[1], 3, 3))
    prim = get("conv2d")
    out, saved = apply_forward(prim, x, w, b, stride=1, padding=padding)
    assert saved is None and out.shape == prim.shape(xs, w.shape, b.shape, stride=1,
                                                     padding=padding)
    np.testing.assert_allclose(out, ref_conv(x, w, b, 1, padding), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(out.shape)
    got = apply_backward(prim, g, out, (x, w, b), (True,) * 3, saved, stride=1,
                         padding=padding)
    for a, r in zip(got, ref_conv_grads(g, x, w, 1, padding), strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_winograd_is_taken_only_where_it_pays(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(conv, "winograd", lambda *a: calls.append(a[1].shape) or
                        conv.np.zeros((a[0].shape[0], a[1].shape[0], 1, 1)))
    rng = np.random.default_rng(0)

    def run(xs, ws, stride=1, groups=1):
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        conv.conv2d_forward(x, w, np.zeros(ws[0]), stride=stride, padding=0, groups=groups)

    run((8, 192, 13, 13), (384, 192, 3, 3))            # AlexNet's third: yes
    run((32, 1, 8, 8), (16, 1, 3, 3))                  # cnn_digits: columns saved
    run((8, 16, 13, 13), (384, 16, 3, 3))              # too few input channels
    run((8, 64, 27, 27), (192, 64, 5, 5))              # 5 x 5
    run((8, 192, 13, 13), (384, 192, 3, 3), stride=2)
    run((8, 192, 13, 13), (384, 96, 3, 3), groups=2)
    assert calls == [(384, 192, 3, 3)]


def test_winograd_float32_matches_float64(winograd) -> None:
    x, w, b = _inputs((3, 40, 9, 11), (36, 40, 3, 3), seed=4)
    outs = []
    for dtype in (np.float32, np.float64):
        xs = tuple(a.astype(np.float32).astype(dtype) for a in (x, w, b))
        outs.append(get("conv2d").forward(*xs, stride=1, padding=1)[0])
    assert outs[0].dtype == np.float32
    ref = ref_conv(*(a.astype(np.float32).astype(np.float64) for a in (x, w, b)), 1, 1)
    np.testing.assert_allclose(outs[1], ref, rtol=1e-12, atol=1e-12)
    # As close as the columns' float32 product: a few units in the last place of the sums.
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("at", [(0, 0), (2, 3), (4, 4), (5, 6), (1, 6)])
def test_winograd_nan_reaches_exactly_its_windows(winograd, at) -> None:
    x, w, b = _inputs((2, 2, 6, 7), (3, 2, 3, 3))
    x[1, 1][at] = np.nan
    out = get("conv2d").forward(x, w, b, stride=1, padding=1)[0]
    want = np.isnan(ref_conv(x, w, b, 1, 1))
    np.testing.assert_array_equal(np.isnan(out), want)
    assert want[1].any() and not want[0].any()


def test_winograd_gradcheck(winograd) -> None:
    x, w, b = _inputs((2, 2, 5, 6), (3, 2, 3, 3), seed=5)
    check_primitive(get("conv2d"), (x, w, b), {"stride": 1, "padding": 1}, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Columns a chunk of images at a time


@pytest.mark.parametrize("nb, p, cols, want", [
    (8, 169, 2048, [(0, 8)]),
    (8, 169, 1024, [(0, 4), (4, 8)]),
    (8, 3025, 1024, [(i, i + 1) for i in range(8)]),
    (8, 729, 1024, [(0, 2), (2, 4), (4, 6), (6, 8)]),
    (5, 10, 20, [(0, 2), (2, 4), (4, 5)]),
    (7, 10, 30, [(0, 3), (3, 6), (6, 7)]),
    (1, 5, 1, [(0, 1)]),
])
def test_chunks_cover_the_batch_evenly(nb, p, cols, want) -> None:
    assert conv.chunks(nb, p, cols) == want


@pytest.mark.parametrize("xs, ws, stride, padding, groups", [
    ((5, 3, 7, 6), (4, 3, 3, 3), 2, 1, 1),
    ((5, 2, 6, 6), (4, 2, 3, 3), 1, 1, 1),
    ((5, 4, 6, 7), (6, 2, 3, 3), 1, 1, 2),
    ((5, 3, 7, 7), (3, 1, 3, 3), 2, 1, 3),
])
def test_chunked_columns_match_loops(monkeypatch, xs, ws, stride, padding, groups) -> None:
    monkeypatch.setattr(conv, "SAVE_MAX", 0)
    prim = get("conv2d")
    p = {"stride": stride, "padding": padding, "groups": groups}
    x, w, b = _inputs(xs, ws, seed=6)
    built = []
    columns = conv.columns
    monkeypatch.setattr(conv, "columns", lambda x, *a: built.append(len(x)) or columns(x, *a))
    g = None
    pixels = np.prod(prim.shape(xs, ws, (ws[0],), **p)[2:])
    for cols, sizes in ((1, [1] * 5), (2 * pixels - 1, [2, 2, 1]), (1 << 20, [5])):
        monkeypatch.setattr(conv, "CHUNK_COLS", cols)
        built.clear()
        out, saved = apply_forward(prim, x, w, b, **p)
        assert saved is None and built == sizes
        np.testing.assert_allclose(out, ref_conv(x, w, b, stride, padding, groups),
                                   rtol=1e-12, atol=1e-12)
        g = np.random.default_rng(1).standard_normal(out.shape) if g is None else g
        got = apply_backward(prim, g, out, (x, w, b), (True,) * 3, saved, **p)
        for a, r in zip(got, ref_conv_grads(g, x, w, stride, padding, groups), strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
        dx, dw, db = apply_backward(prim, g, out, (x, w, b), (False, True, False), saved, **p)
        assert dx is None and db is None
        np.testing.assert_allclose(dw, got[1], rtol=1e-12, atol=1e-12)
