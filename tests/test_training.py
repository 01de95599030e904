"""Stages 3-5 end to end: gradients of whole modules, training on small problems, the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import ROOT, dp_here
from dp.dsl import DpError, load_text
from dp.interpreter.training.checkpoint import load_checkpoint
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import typecheck_plan
from dp.interpreter.core.lower import lower

NET = """
Net: R^5 -> R^3
Net(x) = FeedForward(FeedForward(x) : R^7; act = identity)
"""


def _model(text: str, act: str = "relu", dtype=np.float64) -> Model:
    tprog = load_text(text.replace("FeedForward(x)", f"FeedForward(x; act = {act})"))
    model = Model(tprog, "Net", dtype=dtype)
    model.init(0)
    return model


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "gelu", "softplus", "identity"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_feedforward_gradient_matches_central_differences(act, loss):
    model = _model(NET, act)
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (4, 5))
    y = rng.integers(0, 3, 4) if loss == "cross_entropy" else rng.normal(size=(4, 3))
    model.loss_and_grad(loss, x, y)
    analytic = model.grad_flat.copy()
    numeric = np.zeros_like(analytic)
    eps = 1e-6
    for i in range(model.flat.size):
        keep = model.flat[i]
        model.flat[i] = keep + eps
        up = model.loss(loss, x, y)
        model.flat[i] = keep - eps
        down = model.loss(loss, x, y)
        model.flat[i] = keep
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


def test_float32_run_matches_float64():
    m64, m32 = _model(NET, "tanh"), _model(NET, "tanh", np.float32)
    x = np.random.default_rng(2).uniform(-2, 2, (6, 5))
    y = np.array([0, 1, 2, 0, 1, 2])
    l64 = m64.loss_and_grad("cross_entropy", x, y)
    l32 = m32.loss_and_grad("cross_entropy", x.astype(np.float32), y)
    assert abs(l64 - l32) < 1e-5
    np.testing.assert_allclose(m32.grad_flat, m64.grad_flat, rtol=1e-3, atol=1e-4)


def test_plan_shapes_agree_with_the_primitive_shape_rules():
    tprog = load_text(NET)
    for batch in (1, 32):
        typecheck_plan(lower(tprog, "Net", batch))


def _blobs(tmp_path, n=400):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    centers = np.array([[2, 0, 0, 1], [0, 2, 0, -1], [0, 0, 2, 0]], dtype=np.float32)
    x = centers[y] + rng.normal(0, 0.6, (n, 4)).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", x=x, y=y)


PROGRAM = """
Blobs: R^4 -> R^3
Blobs(x) = FeedForward(FeedForward(x) : R^16; act = identity)

train Blobs on npz("blobs.npz"):
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs EPOCHS

run:
  print accuracy(Blobs, npz("blobs.npz"))
  print loss(Blobs, npz("blobs.npz"))
"""


def _accuracy(out: str) -> float:
    return float(re.search(r"accuracy\(.*\) = ([0-9.]+)", out).group(1))


def test_training_reduces_the_loss_and_reaches_accuracy(tmp_path, write_program):
    _blobs(tmp_path)
    path = write_program(PROGRAM.replace("EPOCHS", "10"))
    code, out, err = dp_here("train", path)
    assert code == 0, err
    losses = [float(m) for m in re.findall(r"epoch +\d+/10 +loss ([0-9.]+)", out)]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    assert _accuracy(out) >= 0.95
    code, out2, err = dp_here("run", path)  # the saved parameters give the same accuracy
    assert code == 0, err
    assert _accuracy(out2) == _accuracy(out)


def test_same_seed_same_parameters(tmp_path, write_program):
    _blobs(tmp_path)
    path = write_program(PROGRAM.replace("EPOCHS", "2"))
    outs = []
    for name in ("a.safetensors", "b.safetensors"):
        code, _, err = dp_here("train", path, "--checkpoint", str(tmp_path / name))
        assert code == 0, err
        outs.append(load_checkpoint(str(tmp_path / name))[0])
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:  # bitwise equal (the header's metadata order is the library's choice)
        assert outs[0][k].tobytes() == outs[1][k].tobytes()


@pytest.mark.slow
def test_digits_mlp_reaches_the_reference_accuracy(tmp_path):
    """The main job: mlp_digits (a reference workload) reaches at least 97.5% test accuracy."""
    ckpt = tmp_path / "digits.safetensors"
    code, out, err = dp_here("train", "programs/digits_mlp.dp", "--checkpoint", str(ckpt),
                             cwd=ROOT)
    assert code == 0, err
    assert "epoch 20/20" in out
    assert _accuracy(out) >= 0.975
    code, out2, err = dp_here("run", "programs/digits_mlp.dp", "--checkpoint", str(ckpt),
                              cwd=ROOT)
    assert code == 0, err
    assert _accuracy(out2) == _accuracy(out)


def test_check_prints_signatures_parameters_and_counts():
    code, out, err = dp_here("check", "programs/digits_mlp.dp", cwd=ROOT)
    assert code == 0, err
    assert out == (
        "programs/digits_mlp.dp: ok (1 module)\n"
        "\n"
        "Digits: R^64 -> R^10\n"
        "  feedforward1 = FeedForward: R^64 -> R^128\n"
        "  feedforward2 = FeedForward: R^128 -> R^10; act = identity\n"
        "  parameter              shape                 count\n"
        "  Digits.feedforward1.W  R^(128, 64)           8,192\n"
        "  Digits.feedforward1.b  R^128                   128\n"
        "  Digits.feedforward2.W  R^(10, 128)           1,280\n"
        "  Digits.feedforward2.b  R^10                     10\n"
        "  total                                        9,610\n")


def test_module_arguments_builtins_and_scalars_run_as_written():
    from test_checker import SEQUENCES

    tprog = load_text(SEQUENCES + """
Mixed: R^6 -> R^6
Mixed(x) = gelu(x) * sigmoid(x) - mean(x) + sum(softmax(x)) / 2
""")
    pipeline = Model(tprog, "Pipeline")
    assert np.all(pipeline.predict(np.ones((2, 5, 8), np.float32)) == 12)  # 2 * 2 * (1 + 1 + 1)
    x = np.linspace(-1, 1, 12).reshape(2, 6)
    gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    want = gelu / (1 + np.exp(-x)) - x.mean(1, keepdims=True) + 0.5
    got = Model(tprog, "Mixed", dtype=np.float64).predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(DpError, match="has open dimensions"):
        Model(tprog, "Cell")
