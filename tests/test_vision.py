"""Convolutional networks from source text: sizes in the checker, AlexNet's layout, training a
CNN, and running AlexNet's forward pass (issue 3)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import ROOT, dp_here
from dp.dsl import DpError, load_text
from dp.dsl.dims import DimVar, dim_from
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import typecheck_plan

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
                          "but the data has examples of shape R^64\n")


# --- running ----------------------------------------------------------------------------------
def test_cnn_gradient_matches_central_differences():
    model = Model(load_text(CNN), "Net", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, (3, 1, 8, 8)), np.array([0, 2, 1])
    model.loss_and_grad("cross_entropy", x, y)
    analytic = model.grad_flat.copy()
    numeric = np.zeros_like(analytic)
    for i in range(model.flat.size):
        keep = model.flat[i]
        model.flat[i] = keep + 1e-6
        up = model.loss("cross_entropy", x, y)
        model.flat[i] = keep - 1e-6
        down = model.loss("cross_entropy", x, y)
        model.flat[i] = keep
        numeric[i] = (up - down) / 2e-6
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
