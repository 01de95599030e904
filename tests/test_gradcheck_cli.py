"""`dp gradcheck FILE [MODULE]`: a model's gradients against central differences in float64.

It passes on the shipped programs and on standard-library modules, fails (exit 1, naming the
parameter and pointing at its declaration) when a backward rule is wrong, and refuses a module
that cannot be a model or does not exist. The output's layout is pinned, its numbers masked.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.interpreter.core import gradcheck as G
from dp.interpreter.core import primitives


def _masked(out: str) -> str:
    return re.sub(r"\d\.\de-\d\d", "E", out)


def test_digits_mlp_passes_and_the_output_is_pinned():
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", cwd=ROOT)
    assert (code, err) == (0, "")
    assert _masked(out) == """\
gradcheck Digits in float64: batch 2, seed 0, eps 1e-06 (central differences), tolerance 0.0001
error = |autodiff - numeric| / max(|autodiff|, |numeric|, 0.001), at most 16 random entries of each tensor
  gradient of             entries checked   worst error
  Digits.feedforward1.W       16 of 8,192       E
  Digits.feedforward1.b         16 of 128       E
  Digits.feedforward2.W       16 of 1,280       E
  Digits.feedforward2.b            all 10       E
  input x                       16 of 128       E
ok: 74 entries of 5 tensors within 0.0001
"""  # noqa: E501
    worst = max(float(e) for e in re.findall(r"\d\.\de-\d\d", out))
    assert worst < 1e-5


STACK = """
Net: (R^8)^3 -> (R^8)^3
Net(xs) = TransformerBlock(scan(LSTM, xs); heads = 2, ff = 6, dropout = 0.1)
"""


def test_standard_library_modules_pass_with_the_flags(write_program):
    """A transformer block with dropout (checked in evaluation) after an LSTM; every flag."""
    path = write_program(STACK)
    code, out, err = dp_here("gradcheck", path, "Net", "--batch", "3", "--seed", "5",
                             "--eps", "1e-5", "--tol", "1e-3")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0] == ("gradcheck Net in float64: batch 3, seed 5, eps 1e-05 (central "
                        "differences), tolerance 0.001")
    # 28 parameters and the input share 320 entries: at most 11 of each (all of a small one)
    assert lines[1].endswith("at most 11 random entries of each tensor")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:-1]}
    assert len(rows) == 29 and lines[-1] == "ok: 275 entries of 29 tensors within 0.001"
    assert rows["Net.lstm.simplernn1.U"][:3] == ["11", "of", "64"]
    assert rows["Net.transformerblock.addnorm1.layernorm.g"][:2] == ["all", "8"]
    assert rows["input"][:4] == ["xs", "11", "of", "72"]  # 3 examples of 3 x 8


def test_a_token_model_checks_its_parameters_and_no_input(write_program):
    path = write_program("Net: Token[7]^4 -> Token[7]^4\n"
                         "Net(ts) = LanguageModel(ts; body = SequenceRNN(; cell = SimpleRNN, "
                         "h = 6), d = 5)\n")
    code, out, err = dp_here("gradcheck", path, "Net")
    assert (code, err) == (0, "")
    assert "input" not in out and "Net.languagemodel.embedtoken.E" in out


def _doubled_weight_gradient(monkeypatch):
    """linear's backward with the gradient of W (its second operand) doubled, where linear is
    fused with a relu (the first layer of the digits model only)."""
    linear = primitives.PRIMITIVES["linear"]

    def wrong(g, out, inputs, wants, relu=False, **params):
        grads = list(linear.backward(g, out, inputs, wants, relu=relu, **params))
        if relu and grads[1] is not None:
            grads[1] = 2 * grads[1]
        return tuple(grads)

    monkeypatch.setitem(primitives.PRIMITIVES, "linear", replace(linear, backward=wrong))


def test_a_wrong_gradient_fails_and_names_the_parameter(monkeypatch):
    _doubled_weight_gradient(monkeypatch)
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", cwd=ROOT)
    assert code == 1
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[3:]}
    assert float(rows["Digits.feedforward1.W"]) == pytest.approx(0.5, abs=1e-4)  # 2a vs a
    assert float(rows["Digits.feedforward2.W"]) < 1e-5 and "ok:" not in out
    message = err.splitlines()
    assert message[0] == ("error[gradient]: the gradient of Digits.feedforward1.W differs from "
                          "central differences: error 5.0e-01, beyond the tolerance 0.0001")
    assert message[1].endswith("stdlib/feedforward.dp:4:3")  # `param W: R^(m, n) ~ glorot`
    assert message[3].endswith("param W: R^(m, n) ~ glorot")
    assert re.fullmatch(r"   = note: at Digits\.feedforward1\.W\[\d+, \d+\]: autodiff \S+, "
                        r"central differences \S+", message[5])
    assert "Traceback" not in err


def test_the_tolerance_decides(monkeypatch):
    """A wrong gradient passes a tolerance above its error: exit 0 is the tolerance's."""
    _doubled_weight_gradient(monkeypatch)
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", "--tol", "0.6", cwd=ROOT)
    assert (code, err) == (0, "") and out.endswith("within 0.6\n")


def test_a_module_that_is_not_closed_is_refused_at_its_definition(write_program):
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", "FeedForward", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == ("error[shape]: FeedForward: R^n -> R^m has open dimensions; "
                                   "a model to train or run needs concrete sizes")
    assert err.splitlines()[1].endswith("stdlib/feedforward.dp:3:1")  # its definition
    path = write_program("Net: (R^4)^3 -> (R^4)^3\nNet(xs; f: SequenceModel) = f(xs)\n")
    code, out, err = dp_here("gradcheck", path, "Net")
    assert code == 1 and err.startswith("error[")
    assert f"--> {path}:2:1" in err and "f" in err.splitlines()[0]


def test_an_unknown_module_and_a_program_without_a_model(write_program):
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", "Digit", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == ("error[name]: no module 'Digit' is defined in programs/digits_mlp.dp or the "
                   "standard library\n   = note: did you mean 'Digits'?\n")
    path = write_program("Net: R^4 -> R^2\nNet(x) = FeedForward(x)\n")
    code, out, err = dp_here("gradcheck", path)
    assert (code, out) == (2, "")
    assert err.startswith(f"error[usage]: {path} has no train block: name the module to check")


@pytest.mark.parametrize("flags, message", [
    (["--eps", "0"], "--eps must be a positive number, not 0"),
    (["--tol", "nan"], "--tol must be a positive number, not nan"),
    (["--batch", "0"], "--batch must be at least 1, not 0"),
    (["--eps", "x"], "argument --eps: invalid float value: 'x'"),
])
def test_bad_flags_are_usage_errors(flags, message):
    code, out, err = dp_here("gradcheck", "programs/digits_mlp.dp", *flags, cwd=ROOT)
    assert (code, out) == (2, "")
    assert err.splitlines()[0].startswith(f"error[usage]: {message}")


def test_central_difference_puts_the_array_back_exactly():
    x = np.random.default_rng(0).uniform(-2, 2, (3, 4))
    keep = x.copy()
    assert G.central_difference(lambda: float(np.sum(x ** 3)), x, 5) == pytest.approx(
        3 * keep.reshape(-1)[5] ** 2, rel=1e-8)
    t = np.ones_like(x)
    assert G.central_difference(lambda: float(np.sum(x ** 2)), x, t) == pytest.approx(
        2 * keep.sum(), rel=1e-8)
    assert np.array_equal(x, keep)


def test_the_error_is_relative_and_absolute_below_the_floor():
    assert G.errors(np.array([2.0, 1e-9]), np.array([1.0, 2e-9])).tolist() == pytest.approx(
        [0.5, 1e-9 / G.FLOOR])
