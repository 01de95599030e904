"""The figures dp prints (accuracy, held-out loss, exact match, predictions) recounted
independently: from the checkpoint's weights by a forward pass written here in NumPy (the
digits MLP), or from the model's outputs with NumPy (the sequence task), never through the
report code. A report that miscounts (say, always 100%) fails here."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, dp_here
from safetensors.numpy import load_file

import dp
from dp.interpreter.data.dataset import load_digits
from dp.interpreter.data.tasks import reversal


def _float(text: str, label: str) -> float:
    return float(re.search(rf"{label} (-?[0-9.]+)", text)[1])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    ck = tmp_path_factory.mktemp("counts") / "d.safetensors"
    code, out, err = dp_here("train", ROOT / "programs" / "digits_mlp.dp", "--checkpoint", ck,
                             "--set", "epochs=2")
    assert code == 0, err
    return ck, out


def _digits_logits(ck) -> tuple[np.ndarray, np.ndarray]:
    """The digits MLP by hand: relu(x W1^T + b1) W2^T + b2, in float64."""
    w = {k: v.astype(np.float64) for k, v in load_file(str(ck)).items()}
    test = load_digits("test")
    h = np.maximum(test.x @ w["Digits.feedforward1.W"].T + w["Digits.feedforward1.b"], 0)
    return h @ w["Digits.feedforward2.W"].T + w["Digits.feedforward2.b"], test.y


def test_accuracy_and_held_out_loss_are_recounted(digits_run):
    ck, out = digits_run
    logits, y = _digits_logits(ck)
    right = int(np.sum(logits.argmax(1) == y))
    assert 200 < right < 297                    # trained, and not perfect: a count that matters
    shift = logits - logits.max(1, keepdims=True)
    log_p = shift - np.log(np.exp(shift).sum(1, keepdims=True))
    held_out = -log_p[np.arange(len(y)), y].mean()
    last_epoch = out.splitlines()[2]
    assert last_epoch.startswith("epoch 2/2")
    assert abs(_float(last_epoch, "held-out loss") - held_out) <= 6e-5
    assert abs(_float(last_epoch, "accuracy") - right / 297) <= 6e-5
    assert f"accuracy(Digits, digits(split = test)) = {right / 297:.4f} ({right}/297)" in out


def test_predictions_are_the_argmax(digits_run):
    ck, out = digits_run
    logits, y = _digits_logits(ck)
    line = next(s for s in out.splitlines() if s.startswith("predict(Digits"))
    pairs = re.findall(r"(\d) \(true (\d)\)", line)
    assert [(int(g), int(t)) for g, t in pairs] == list(zip(logits.argmax(1)[:8], y[:8]))


def test_dp_run_prints_the_same_count(digits_run):
    ck, out = digits_run
    logits, y = _digits_logits(ck)
    right = int(np.sum(logits.argmax(1) == y))
    code, run_out, err = dp_here("run", ROOT / "programs" / "digits_mlp.dp", "--checkpoint", ck)
    assert code == 0, err
    assert run_out.splitlines()[0].endswith(f"= {right / 297:.4f} ({right}/297)")


REVERSE = """\
Reverse: Token[11]^6 -> Token[11]^6
Reverse(ts) = SequenceToSequence(ts; d = 16, layers = 1, heads = 2, ff = 32)

train Reverse on reversal(split = train):
  loss cross_entropy; optimizer adamw(lr = 0.01); batch 64; steps 30

run:
  print exact_match(Reverse, reversal(split = test))
  print accuracy(Reverse, reversal(split = test))
"""


def test_exact_match_and_token_accuracy_are_recounted(tmp_path):
    prog = tmp_path / "reverse.dp"
    prog.write_text(REVERSE)
    ck = tmp_path / "reverse.safetensors"
    code, out, err = dp_here("train", prog, "--checkpoint", ck)
    assert code == 0, err
    # the held-out strings as dp draws them; the answer is each written backwards
    x = reversal("test", (6,), None).x
    net = dp.load(prog).model("Reverse")
    net.load_weights(ck)
    guessed = net(x).argmax(-1)
    right_tokens = int(np.sum(guessed == x[:, ::-1]))
    right_strings = int(np.sum((guessed == x[:, ::-1]).all(1)))
    n = len(x)
    assert 0 < right_strings < n and right_tokens < 6 * n  # neither nothing nor everything
    lines = out.splitlines()
    assert lines[-2].endswith(f"= {right_strings / n:.4f} ({right_strings}/{n})")
    assert lines[-1].endswith(f"= {right_tokens / (6 * n):.4f} ({right_tokens}/{6 * n})")
