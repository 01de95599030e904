"""Convolutional networks from source text: sizes in the checker, AlexNet's layout, training a
CNN, and running AlexNet's forward pass (issue 3)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import ROOT, dp_here
from gradcheck import numeric_grad
from dp.dsl import DpError, load_text
from dp.dsl.dims import DimVar, dim_from
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import typecheck_plan
from dp.interpreter.core.primitives import get

CNN = """
Net: R^(1, 8, 8) -> R^3
Net(x) = FeedForward(flatten(MaxPool(Conv(x; c2 = 4))); act = identity)
"""


def _error(text: str) -> DpError:
    with pytest.raises(DpError) as info:
        load_text(text)
    return info.value


# --- sizes in the checker ---------------------------------------------------------------------
def test_dimension_arithmetic_prints_with_the_fewest_parentheses():
    h, s, k = DimVar("h", 1), DimVar("s", 2), DimVar("k", 3)
    e = dim_from("+", dim_from("//", dim_from("-", h, k), s), 1)
    assert str(e) == "(h - k) // s + 1"
    assert str(dim_from("-", h, dim_from("-", k, s))) == "h - (k - s)"
    assert str(dim_from("*", 2, dim_from("+", h, 1))) == "2 * (h + 1)"
    assert dim_from("//", 217, 4) == 54 and dim_from("*", h, 1) is h


def test_alexnet_has_the_published_layout_and_parameter_count():
    code, out, err = dp_here("check", "stdlib/vision.dp", cwd=ROOT)
    assert code == 0, err
    alexnet = out[out.index("AlexNet: R^(3, 224, 224) -> R^1000"):]
    for line in [
        "stridedconv = StridedConv: R^(3, 224, 224) -> R^(64, 55, 55); k = 11, s = 4, p = 2",
        "overlappool1 = OverlapPool: R^(64, 55, 55) -> R^(64, 27, 27); k = 3, s = 2",
        "conv1 = Conv: R^(64, 27, 27) -> R^(192, 27, 27); k = 5",
        "conv4 = Conv: R^(256, 13, 13) -> R^(256, 13, 13); k = 3",
        "overlappool3 = OverlapPool: R^(256, 13, 13) -> R^(256, 6, 6); k = 3, s = 2",
        "feedforward1 = FeedForward: R^9216 -> R^4096",
        "feedforward3 = FeedForward: R^4096 -> R^1000; act = identity",
        "AlexNet.feedforward1.W  R^(4096, 9216)   37,748,736",
    ]:
        assert line in alexnet
    assert re.search(r"total +61,100,840\n", alexnet)  # torchvision's alexnet: 61,100,840
    tprog = load_text("")
    specs = lower(tprog, "AlexNet", 1).specs
    assert sum(int(np.prod(s.shape)) for s in specs.values()) == 61_100_840


def test_size_arguments_default_pass_through_and_are_checked():
    tprog = load_text("""
Block: R^(c, h, w) -> R^(c, h, w)
Block(x; k = 3) = Conv(Conv(x; c2 = c, k = k); k = k)

Net: R^(2, 9, 9) -> R^(2, 9, 9)
Net(x) = Block(Block(x); k = 5)
""")
    shapes = {p: s.shape for p, s in lower(tprog, "Net", 1).specs.items()}
    assert shapes["Net.block1.conv1.W"] == (2, 2, 3, 3)
    assert shapes["Net.block2.conv2.W"] == (2, 2, 5, 5)
    err = _error("Net: R^(1, 8, 8) -> R^(1, 8, 8)\nNet(x) = Conv(x; kernel = 3)\n")
    assert err.message == "Conv has no argument 'kernel'"
    err = _error("Net: R^(1, 8, 8) -> R^(1, 8, 8)\nNet(x) = Conv(x; k = 2.5)\n")
    assert "must be a positive whole number" in err.message
    err = _error("Net: R^4 -> R^4\nNet(x; act) = act(x)\n")  # not a dimension: not a size
    assert err.message == "configuration argument 'act' needs a signature or a default"
    assert err.notes == ("e.g. `act: R -> R = relu` for a module, `act = 3` for a size",)


def test_strided_sizes_floor_and_tiling_pools_divide_exactly():
    tprog = load_text("""
Net: R^(3, 32, 31) -> R^(8, 7, 7)
Net(x) = OverlapPool(StridedConv(x; c2 = 8, k = 5, s = 2, p = 1))
""")
    plan = lower(tprog, "Net", 2)
    typecheck_plan(plan)
    assert plan.outputs[0].shape == (2, 8, 7, 7)  # (32 + 2 - 5) // 2 + 1 = 15, (15 - 3) // 2 + 1
    err = _error("Net: R^(4, 6, 5) -> R^(4, 3, 2)\nNet(x) = maxpool2d(x)\n")
    assert err.message == ("maxpool2d of size 2 needs a width that is a multiple of 2, but x "
                           "has width 5")


def test_generic_volume_modules_check_once_and_lower_per_size():
    tprog = load_text("""
Features: R^(c, h, w) -> R^(c * h / 2 * w / 2)
Features(x) = flatten(MaxPool(x))

Net: R^(3, 4, 6) -> R^18
Net(x) = Features(x)
""")
    assert str(tprog.signatures["Features"]) == "R^(c, h, w) -> R^(c * h / 2 * w / 2)"
    assert lower(tprog, "Net", 1).outputs[0].shape == (1, 18)


def test_digit_rows_feed_a_volume_and_a_wrong_size_is_a_data_error(tmp_path, write_program):
    path = write_program("Net: R^(1, 7, 7) -> R^10\nNet(x) = FeedForward(flatten(x))\n"
                         "train Net on digits(split = train):\n"
                         "  loss cross_entropy; optimizer sgd(lr = 0.1); batch 32; epochs 1\n")
    code, out, err = dp_here("train", path, "--checkpoint", str(tmp_path / "c.safetensors"))
    assert code == 1
    assert err.startswith("error[data]: Net expects inputs of shape R^(1, 7, 7) (49 values), "
                          "but the data has examples of shape R^64\n"
                          f"  --> {path}:3:14\n")


# --- running ----------------------------------------------------------------------------------
def test_cnn_gradient_matches_central_differences():
    model = Model(load_text(CNN), "Net", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, (3, 1, 8, 8)), np.array([0, 2, 1])
    model.loss_and_grad("cross_entropy", x, y)
    analytic = model.grad_flat.copy()
    numeric = numeric_grad(model, "cross_entropy", x, y)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


def _accuracy(out: str) -> float:
    return float(re.search(r"accuracy\(\w+, digits\(split = test\)\) = ([0-9.]+)", out)[1])


def test_a_small_cnn_trains_on_digits(tmp_path, write_program):
    path = write_program(CNN.replace("R^3", "R^10") + """
train Net on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.003); batch 32; epochs 3
run:
  print accuracy(Net, digits(split = test))
""")
    code, out, err = dp_here("train", path, "--checkpoint", str(tmp_path / "c.safetensors"))
    assert code == 0, err
    assert _accuracy(out) >= 0.85


@pytest.mark.slow
def test_digits_cnn_reaches_the_reference_accuracy(tmp_path):
    """cnn_digits (a reference workload) reaches at least 97% test accuracy."""
    ckpt = str(tmp_path / "cnn.safetensors")
    code, out, err = dp_here("train", "programs/digits_cnn.dp", "--checkpoint", ckpt, cwd=ROOT)
    assert code == 0, err
    assert "epoch 15/15" in out
    assert _accuracy(out) >= 0.97
    code, out2, err = dp_here("run", "programs/digits_cnn.dp", "--checkpoint", ckpt, cwd=ROOT)
    assert code == 0, err
    assert _accuracy(out2) == _accuracy(out)


@pytest.mark.slow
def test_the_small_alexnet_for_digits_trains(tmp_path):
    ckpt = str(tmp_path / "alex.safetensors")
    code, out, err = dp_here("train", "programs/digits_alexnet.dp", "--checkpoint", ckpt,
                             cwd=ROOT)
    assert code == 0, err
    assert _accuracy(out) >= 0.97
    assert "params(SmallAlexNet) = 238,730\n" in out


def test_alexnet_forward_on_random_images(tmp_path):
    program = tmp_path / "alexnet.dp"
    program.write_text("run:\n  print time(AlexNet, random(n = 2))\n")
    code, out, err = dp_here("run", str(program))
    assert code == 0, err
    assert out.startswith("AlexNet is not trained here: its parameters are initialized with "
                          "seed 0\n")
    assert re.search(r"time\(AlexNet, random\(n = 2\)\) = output \[2, 1000\] \(R\^1000 each\), "
                     r"[0-9.]+ ms for 2 examples, [0-9.]+ ms per example\n", out)


# --- convolutions as people write them: padding 0, groups, rectangles, 1-D, average pools --------
def _params(text: str, name: str = "Net") -> dict:
    return {p: s.shape for p, s in lower(load_text(text), name, 1).specs.items()}


def test_padding_zero_is_a_size_like_any_other():
    # StridedConv's padding defaults to 0 and may be given 0; conv2d takes padding = 0.
    tprog = load_text("""
Net: R^(1, 8, 8) -> R^(4, 6, 6)
Net(x) = StridedConv(x; c2 = 4, k = 3)
Zero: R^(1, 8, 8) -> R^(4, 6, 6)
Zero(x) = StridedConv(x; c2 = 4, k = 3, s = 1, p = 0)
Valid: R^(1, 8, 8) -> R^(2, 6, 6)
Valid(x) = conv2d(x, W, b; padding = 0)
  param W: R^(2, 1, 3, 3) ~ fan_in
  param b: R^2 ~ zeros
""")
    for name in ("Net", "Zero", "Valid"):
        eqn = next(e for e in lower(tprog, name, 2).eqns if e.prim == "conv2d")
        params = {k: v for k, v in eqn.params if k != "relu"}  # fused: Conv's relu
        assert params == {"stride": 1, "padding": 0} and eqn.out.shape[2:] == (6, 6)
    err = _error("Net: R^(1, 8, 8) -> R^(4, 6, 6)\nNet(x) = StridedConv(x; c2 = 4, k = 3, "
                 "p = -1)\n")
    assert err.message == ("the size p of StridedConv must be a whole number, 0 or more, or a "
                           "dimension name")
    err = _error("Net: R^(1, 8, 8) -> R^(4, 6, 6)\nNet(x) = StridedConv(x; c2 = 4, k = 3, "
                 "s = 0)\n")
    assert err.message == ("the size s of StridedConv must be a positive whole number or a "
                           "dimension name")
    # a size that defaults to 0 may be 0, but passed on as a kernel it is refused there
    err = _error("Pad: R^(c, h, w) -> R^(c, h, w)\nPad(x; p = 0) = Conv(x; c2 = c, k = p)\n"
                 "Net: R^(4, 8, 8) -> R^(4, 8, 8)\nNet(x) = Pad(x)\n")
    assert err.message == "Conv cannot be used with k = 0: every size must be at least 1"
    # a default written as a real number makes a real argument, not a size
    err = _error("Pad: R^(c, h, w) -> R^(c, h, w)\nPad(x; p = 1.0) = conv2d(x, W, b; padding = p)"
                 "\n  param W: R^(c, c, 3, 3) ~ fan_in\n  param b: R^c ~ zeros\n")
    assert err.message == ("the size padding of conv2d must be a whole number, 0 or more, or a "
                           "dimension name")


def test_conv2d_pads_the_same_at_every_stride_unless_told():
    """The default padding is (k - 1) / 2 whether or not a stride is given: at stride s the
    output is ceil(h / s); padding = 0 is the valid convolution."""
    text = """
Net: R^(1, 8, 7) -> R^(2, 4, 4)
Net(x) = conv2d(x, W, b; stride = 2)
  param W: R^(2, 1, 3, 3) ~ fan_in
  param b: R^2 ~ zeros
"""
    eqn = next(e for e in lower(load_text(text), "Net", 1).eqns if e.prim == "conv2d")
    assert dict(eqn.params) == {"stride": 2, "padding": 1}
    err = _error(text.replace("R^(2, 1, 3, 3)", "R^(2, 1, 4, 4)"))
    assert err.message == ("conv2d pads to the same size only with an odd kernel, but the "
                           "kernel is 4 by 4")


def test_grouped_depthwise_rectangular_and_1d_parameter_counts():
    shapes = _params("""
Net: R^(4, 8, 8) -> R^(6, 8, 8)
Net(x) = RectConv(GroupConv(DepthwiseConv(x); c2 = 8, g = 2); c2 = 6, kh = 1, kw = 5)
Seq: (R^5)^7 -> (R^3)^7
Seq(xs) = Conv1D(xs; e = 3)
""")
    assert shapes["Net.depthwiseconv.W"] == (4, 1, 3, 3)     # c * k * k + c = 40
    assert shapes["Net.groupconv.W"] == (8, 2, 3, 3)         # c2 * c / g * k * k + c2 = 152
    assert shapes["Net.rectconv.W"] == (6, 8, 1, 5)
    seq = _params("Seq: (R^5)^7 -> (R^3)^7\nSeq(xs) = Conv1D(xs; e = 3)\n", "Seq")
    assert seq == {"Seq.conv1d.W": (3, 5, 3), "Seq.conv1d.b": (3,)}  # k * d * e + e = 48
    code, out, err = dp_here("check", "programs/digits_dwsep_cnn.dp", cwd=ROOT)
    assert code == 0, err
    assert "depthwiseconv1 = DepthwiseConv: R^(8, 8, 8) -> R^(8, 8, 8); k = 3" in out
    assert re.search(r"total +2,298\n", out)


def test_the_one_dimensional_convolution_is_the_lowered_primitive():
    tprog = load_text("Seq: (R^4)^9 -> (R^2)^5\nSeq(xs) = conv1d(xs, W, b; stride = 2, "
                      "padding = 1)\n  param W: R^(2, 4, 3) ~ fan_in\n  param b: R^2 ~ zeros\n")
    (eqn,) = [e for e in lower(tprog, "Seq", 3).eqns if e.prim == "conv1d"]
    assert dict(eqn.params) == {"stride": 2, "padding": 1} and eqn.out.shape == (3, 5, 2)
    model = Model(tprog, "Seq", dtype=np.float64)
    model.init(0)
    xs = np.random.default_rng(0).standard_normal((3, 9, 4))
    w, b = model.params["Seq.W"], model.params["Seq.b"]
    xp = np.pad(xs, ((0, 0), (1, 1), (0, 0)))
    want = np.stack([np.einsum("bkd,edk->be", xp[:, 2 * o:2 * o + 3], w) + b for o in range(5)],
                    axis=1)
    np.testing.assert_allclose(model.predict(xs), want, rtol=1e-12)


def test_depthwise_is_one_filter_per_channel_and_pools_average():
    tprog = load_text("""
Net: R^(3, 6, 6) -> R^3
Net(x) = GlobalAvgPool(AvgPool(DepthwiseConv(x; act = identity)))
""")
    model = Model(tprog, "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    w, b = model.params["Net.depthwiseconv.W"], model.params["Net.depthwiseconv.b"]
    conv = np.stack([get("conv2d").forward(x[:, i:i + 1], w[i:i + 1], b[i:i + 1], stride=1,
                                           padding=1)[0][:, 0] for i in range(3)], axis=1)
    # a 2x2 average pool then the mean of each channel: the mean of the channel
    np.testing.assert_allclose(model.predict(x), conv.mean(axis=(2, 3)), rtol=1e-12)


@pytest.mark.parametrize("text, message", [
    ("Net: R^(4, 8, 8) -> R^(6, 8, 8)\nNet(x) = GroupConv(x; c2 = 6, g = 4)\n",
     "conv2d: 4 groups do not divide the 6 output channels here"),
    ("Net: R^(4, 8, 8) -> R^(8, 8, 8)\nNet(x) = conv2d(x, W, b; groups = 3)\n"
     "  param W: R^(8, 4, 3, 3) ~ fan_in\n  param b: R^8 ~ zeros\n",
     "conv2d: 3 groups do not divide the 4 channels of x"),
    ("Net: R^(4, 8, 8) -> R^(8, 8, 8)\nNet(x) = conv2d(x, W, b; groups = 2)\n"
     "  param W: R^(8, 4, 3, 3) ~ fan_in\n  param b: R^8 ~ zeros\n",
     "conv2d: the filters W take 4 channels a group, but x has 4 in 2 groups (2 a group)"),
    ("Net: R^(4, 8, 8) -> R^(8, 8, 8)\nNet(x) = RectConv(x; c2 = 8, kh = 2, kw = 3)\n",
     "conv2d pads to the same size only with an odd kernel, but the kernel is 2 by 3 here"),
    ("Seq: (R^4)^6 -> (R^2)^6\nSeq(xs) = Conv1D(xs; k = 2)\n",
     "conv1d pads to the same size only with an odd kernel, but the kernel is 2 here"),
    ("Seq: (R^4)^6 -> (R^2)^6\nSeq(xs) = conv1d(xs, W, b)\n  param W: R^(2, 3, 3) ~ fan_in\n"
     "  param b: R^2 ~ zeros\n",
     "conv1d: the filters W take vectors of 3, but xs has vectors of 4"),
    ("Net: R^(1, 8, 8) -> R^(1, 8, 8)\nNet(x) = conv1d(x, W, b)\n  param W: R^(2, 3, 3) ~ fan_in\n"
     "  param b: R^2 ~ zeros\n",
     "conv1d needs a sequence of vectors (R^d)^n, but x is R^(1, 8, 8)"),
    ("Net: R^(1, 7, 7) -> R^(1, 3, 3)\nNet(x) = AvgPool(x)\n",
     "AvgPool cannot take x, which is R^(1, 7, 7): its result R^(c, h / 2, w / 2) needs h / 2, "
     "and 7 / 2 is not a whole number"),
    ("Net: R^(1, 6, 5) -> R^(1, 3, 2)\nNet(x) = avgpool2d(x)\n",
     "avgpool2d of size 2 needs a width that is a multiple of 2, but x has width 5"),
])
def test_misused_convolutions_are_check_errors(text, message):
    assert _error(text).message == message


def test_new_modules_gradient_matches_central_differences():
    model = Model(load_text("""
Net: R^(4, 6, 6) -> R^3
Net(x) =
  a = GroupConv(DepthwiseConv(x; act = tanh); c2 = 4, act = tanh)
  b = StridedConv(RectConv(a; c2 = 2, kh = 3, kw = 1, act = tanh); c2 = 2, k = 3, s = 2)
  FeedForward(GlobalAvgPool(AvgPool(a)) + flatten(b) @ M; act = identity)
  param M: R^(8, 4) ~ glorot
"""), "Net", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, (3, 4, 6, 6)), np.array([0, 2, 1])
    model.loss_and_grad("cross_entropy", x, y)
    analytic = model.grad_flat.copy()
    numeric = numeric_grad(model, "cross_entropy", x, y)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("signature, body, least", [
    ("R^(1, 8, 8)", "flatten(MaxPool(Conv(DepthwiseConv(Conv(x; c2 = 4)); c2 = 8, k = 1)))", 0.85),
    ("R^(1, 8, 8)", "flatten(MaxPool(GroupConv(Conv(x; c2 = 4); c2 = 8, g = 2)))", 0.85),
    ("R^(1, 8, 8)", "flatten(MaxPool(RectConv(x; c2 = 8, kh = 3, kw = 1)))", 0.85),
    ("R^(1, 8, 8)", "flatten(AvgPool(Conv(x; c2 = 8)))", 0.85),
    ("R^(1, 8, 8)", "flatten(StridedConv(x; c2 = 8, k = 3))", 0.85),
    ("R^(1, 8, 8)", "GlobalAvgPool(Conv(Conv(x; c2 = 16); c2 = 32))", 0.4),
    ("(R^8)^8", "seq_max(Conv1D(x; e = 16))", 0.75),
], ids=["DepthwiseConv", "GroupConv", "RectConv", "AvgPool", "StridedConv", "GlobalAvgPool",
        "Conv1D"])
def test_each_new_module_trains_on_digits(tmp_path, write_program, signature, body, least):
    path = write_program(f"""
Net: {signature} -> R^10
Net(x) = FeedForward({body}; act = identity)
train Net on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 32; epochs 3
run:
  print accuracy(Net, digits(split = test))
""")
    code, out, err = dp_here("train", path, "--checkpoint", str(tmp_path / "c.safetensors"))
    assert code == 0, err
    assert _accuracy(out) >= least


@pytest.mark.slow
def test_the_depthwise_separable_cnn_beats_digits_cnn_with_fewer_parameters(tmp_path):
    ckpt = str(tmp_path / "dws.safetensors")
    code, out, err = dp_here("train", "programs/digits_dwsep_cnn.dp", "--checkpoint", ckpt,
                             cwd=ROOT)
    assert code == 0, err
    assert _accuracy(out) >= 0.97
    assert "params(DigitsDWSep) = 2,298\n" in out
    code, out, err = dp_here("check", "programs/digits_cnn.dp", cwd=ROOT)
    assert re.search(r"total +2,730\n", out)
