"""`dp gradcheck FILE --set NAME=VALUE`: a configuration argument of the train block's model
chosen as `dp train --set` chooses it (the program is checked as if written with the value),
with the same errors; a setting of training is refused, as `dp run` refuses it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import ROOT, dp_here
from dp.interpreter.core import primitives

CHARLM = "programs/charlm_rnn.dp"
SIZED = """\
Digits: R^64 -> R^10
Digits(x; hidden = 16, act: R -> R = relu) =
  FeedForward(FeedForward(x; act = act) : R^hidden; act = identity)

train Digits on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 32; epochs 1
"""


def _rows(out: str) -> dict[str, str]:
    """Each tensor's row: its name -> the entries checked."""
    return {line.split()[0]: " ".join(line.split()[1:-1]) for line in out.splitlines()[3:-1]}


def test_a_module_argument_is_chosen():
    code, out, err = dp_here("gradcheck", CHARLM, "--set", "cell=LSTM", "--batch", "1", cwd=ROOT)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == ("gradcheck CharRNN with cell = LSTM in float64: batch 1, "
                                   "seed 0, eps 1e-06 (central differences), tolerance 0.0001")
    cell = [name for name in _rows(out) if ".cell." in name]
    assert cell == [f"CharRNN.languagemodel.body.cell.simplernn{i}.{p}"
                    for i in range(1, 5) for p in "UVb"]  # the LSTM's four gates
    assert out.splitlines()[-1] == "ok: 240 entries of 15 tensors within 0.0001"


def test_without_it_the_default_is_checked():
    code, out, err = dp_here("gradcheck", CHARLM, "--batch", "1", cwd=ROOT)
    assert (code, err) == (0, "")
    assert out.startswith("gradcheck CharRNN in float64: batch 1,")
    assert [n for n in _rows(out) if ".cell." in n] == [
        f"CharRNN.languagemodel.body.cell.{p}" for p in "UVb"]  # SimpleRNN


def test_sizes_and_functions_are_chosen(write_program, monkeypatch):
    path = write_program(SIZED)
    code, out, err = dp_here("gradcheck", path, "--set", "hidden=3", "--set", "act=tanh")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("gradcheck Digits with hidden = 3, act = tanh in ")
    rows = _rows(out)
    assert (rows["Digits.feedforward1.W"], rows["Digits.feedforward1.b"]) == ("16 of 192", "all 3")
    # the chosen tanh is what runs: a wrong backward rule of tanh fails it, not the default
    tanh = primitives.PRIMITIVES["tanh"]
    monkeypatch.setitem(primitives.PRIMITIVES, "tanh", replace(
        tanh, backward=lambda *a, **k: tuple(None if g is None else 2 * g
                                             for g in tanh.backward(*a, **k))))
    assert dp_here("gradcheck", path)[0] == 0
    code, _, err = dp_here("gradcheck", path, "--set", "act=tanh")
    assert code == 1
    assert err.startswith("error[gradient]: the gradient of input x differs from central "
                          "differences: error 5.0e-01, beyond the tolerance 0.0001\n")
    assert err.endswith("   = note: also beyond it: Digits.feedforward1.W, Digits.feedforward1.b\n")


@pytest.mark.parametrize("flag, code, message", [
    ("lr=0.1", 2, "error[usage]: --set lr: dp gradcheck chooses configuration arguments of the "
                  "trained model, and 'lr' is none\n   = note: CharRNN's arguments: cell\n"),
    ("cell", 2, "error[usage]: --set takes NAME=VALUE, e.g. --set lr=0.01, not 'cell'\n"),
    ("cell=Nope", 1, "error[name]: unknown module 'Nope'\n"
                     "  --> programs/charlm_rnn.dp:8:13\n"),
    ("cell=FeedForward", 1, "error[type]: CharRNN needs an RNN for 'cell', but FeedForward is "
                            "R^n -> R^m\n  --> programs/charlm_rnn.dp:8:13\n"),
])
def test_the_errors_are_those_of_train(flag, code, message):
    got, out, err = dp_here("gradcheck", CHARLM, "--set", flag, cwd=ROOT)
    assert (got, out) == (code, "")
    assert err.startswith(message)
    if code == 1:
        assert f"   = note: {flag.split('=')[1]} comes from the command line: --set {flag}\n" in err
        assert "   = note: modules that fit 'cell': LSTM, SimpleRNN\n" in err


def test_a_program_without_a_train_block_has_nothing_to_choose(write_program):
    path = write_program("Net: R^4 -> R^2\nNet(x) = FeedForward(x)\n")
    code, out, err = dp_here("gradcheck", path, "Net", "--set", "cell=LSTM")
    assert (code, out) == (2, "")
    assert err == ("error[usage]: --set cell: dp gradcheck chooses configuration arguments of "
                   "the trained model, and 'cell' is none\n"
                   "   = note: the program has no train block\n")


def test_the_help_names_the_flag():
    code, out, _ = dp_here("gradcheck", "--help")
    assert code == 0 and "--set NAME=VALUE" in out
    assert "choose a configuration argument of the train block's model" in " ".join(out.split())
