"""Reliability target 9: a non-finite value in training is reported where it was made.

`dp train` with `--lr 1e30`, a `log` of a negative value, or a `sqrt` whose gradient is
infinite stops within the step that went wrong with `error[numeric]`, exit code 3, naming the
step and the first primitive (its source span) whose result was not finite; no traceback, no
NumPy warning, the last good checkpoint byte-identical. Data containing nan is refused when it
is read (exit code 1). The Python API and the REPL return non-finite values without warnings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import shutil
import warnings
from pathlib import Path

import dp
import numpy as np
import pytest
from conftest import dp_here, program_in, run_dp
from dp.dsl.errors import format_error
from dp.dsl.loader import load
from dp.interpreter.commands import repl
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.nonfinite import diagnose
from dp.interpreter.core.primitives import PRIMITIVES

FIXTURES = Path(__file__).parent / "fixtures" / "numeric"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _good_checkpoint(tmp_path: Path) -> tuple[Path, str]:
    """programs/digits_mlp.dp as tmp_path/prog.dp, trained for 3 steps: its checkpoint and the
    checkpoint's sha256."""
    program = program_in(tmp_path)
    code, _, err = dp_here("train", program, "--steps", "3")
    assert code == 0, err
    return program, _sha256(tmp_path / "prog.safetensors")


# ---- the command, as a user runs it ----------------------------------------------------------

def test_a_huge_rate_stops_at_step_2_naming_the_overflow_in_a_subprocess(tmp_path):
    program, before = _good_checkpoint(tmp_path)
    code, out, err = run_dp("train", program, "--lr", "1e30")
    assert code == 3
    assert re.match(r"error\[numeric\]: the loss became nan at step 2: linear here made the "
                    r"step's first non-finite value\n  --> .*prog\.dp:5:13\n", err), err
    assert "= note: inside FeedForward, at stdlib/feedforward.dp:3: `W x`\n" in err
    assert "Traceback" not in err and "Warning" not in err and "warn" not in err
    assert out.startswith("training Digits: ")
    assert _sha256(tmp_path / "prog.safetensors") == before


def test_the_huge_rate_report_is_the_golden(tmp_path):
    program_in(tmp_path)
    code, out, err = dp_here("train", "prog.dp", "--lr", "1e30", cwd=tmp_path)
    assert code == 3
    assert err == (FIXTURES / "lr_1e30.err").read_text()


def test_log_of_a_negative_value_points_at_the_log(tmp_path):
    for name in ("log_negative.dp", "log_negative.csv"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    code, out, err = dp_here("train", "log_negative.dp", cwd=tmp_path)
    assert code == 3
    assert out == "training Net: R^3 -> R^2 (8 parameters) on 8 examples with sgd, batch 4\n"
    assert err == (FIXTURES / "log_negative.err").read_text()
    assert not (tmp_path / "log_negative.safetensors").exists()


SQRT = """\
Net: R^3 -> R^2
Net(x) = sqrt(square(W x)) + b
  param W: R^(2, 3) ~ glorot
  param b: R^2 ~ zeros

train Net on npz("zero.npz"):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 4; steps 10; seed 2
"""


def test_a_non_finite_gradient_names_the_backward_of_sqrt(tmp_path):
    """sqrt(square(W x)) at x = 0: the loss is finite, sqrt's gradient at 0 is not."""
    np.savez(tmp_path / "zero.npz", x=np.zeros((8, 3), np.float32), y=np.arange(8) % 2)
    (tmp_path / "prog.dp").write_text(SQRT)
    code, _, err = dp_here("train", "prog.dp", cwd=tmp_path)
    assert code == 3
    assert err == (
        "error[numeric]: the gradient norm became nan at step 1 (the loss was finite): the "
        "backward pass of sqrt here made the step's first non-finite gradient\n"
        "  --> prog.dp:2:10\n"
        "   |\n"
        " 2 | Net(x) = sqrt(square(W x)) + b\n"
        "   |          ^^^^^^^^^^^^^^^^^\n"
        "   = note: the gradient of sqrt is infinite at 0 and overflows near it: its input, "
        "`square(W x)`, is 0 at [0, 0] of [4, 2]\n"
        "   = note: training stopped before updating: the last good checkpoint is unchanged\n")


def test_an_update_that_overflows_is_never_saved(tmp_path):
    """--lr 1e39 is infinite in float32: step 1's update makes the parameters non-finite, and
    the checkpoint it would write (every step) is refused; the good one stays."""
    program, before = _good_checkpoint(tmp_path)
    code, _, err = dp_here("train", "prog.dp", "--lr", "1e39", "--checkpoint-every", "1",
                           cwd=tmp_path)
    assert code == 3
    assert err.startswith("error[numeric]: the update of step 1 made the parameter "
                          "'Digits.feedforward1.W' not finite (nan at [0, 0] of [128, 64]); "
                          "training stopped before saving\n  --> prog.dp:7:1\n")
    assert _sha256(tmp_path / "prog.safetensors") == before


def test_a_non_finite_parameter_is_named_at_the_users_call(tmp_path):
    """Without a checkpoint in between, the next step finds the parameter itself."""
    program_in(tmp_path)
    code, _, err = dp_here("train", "prog.dp", "--lr", "1e39", cwd=tmp_path)
    assert code == 3
    assert err == (
        "error[numeric]: the loss became nan at step 2: the parameter 'Digits.feedforward1.W' "
        "is not finite\n"
        "  --> prog.dp:5:25\n"
        "   |\n"
        " 5 | Digits(x) = FeedForward(FeedForward(x) : R^128; act = identity)\n"
        "   |                         ^^^^^^^^^^^^^^\n"
        "   = note: it has nan at [0, 0] of [128, 64]; the update of step 1 made it\n"
        "   = note: inside FeedForward, at stdlib/feedforward.dp:4\n"
        "   = note: training stopped before updating: try a smaller learning rate; the last "
        "good checkpoint is unchanged\n")


def test_data_with_nan_is_a_data_error_exit_1(tmp_path):
    x = np.ones((8, 3), np.float32)
    x[6, 2] = np.nan
    np.savez(tmp_path / "zero.npz", x=x, y=np.arange(8) % 2)
    (tmp_path / "prog.dp").write_text(SQRT)
    code, out, err = dp_here("train", "prog.dp", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err.startswith("error[data]: array 'x' in './zero.npz' has a non-finite value (nan) "
                          "at index [6, 2]; expected finite numbers\n")


# ---- the diagnosis on a model ---------------------------------------------------------------

FUSED = """\
Net: R^3 -> R^2
Net(x) = relu(W x + b)
  param W: R^(2, 3) ~ glorot
  param b: R^2 ~ zeros
"""


def _model(tmp_path: Path, text: str) -> Model:
    path = tmp_path / "net.dp"
    path.write_text(text)
    tprog = load([str(path)])
    return Model(tprog, "Net")


def test_a_fused_step_is_named_as_the_program_wrote_it(tmp_path):
    """`relu(W x + b)` runs as one fused linear; the report names the unfused `W x`."""
    model = _model(tmp_path, FUSED)
    model.init(0)
    model.params["Net.W"][...] = 3e38
    fused = lower(model.tprog, "Net", 4)
    assert [(e.prim, dict(e.params).get("relu")) for e in fused.eqns] == [("linear", True)]
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    err = diagnose(model, "squared_error", x, y, None, 7, "the loss became nan at step 7")
    assert err.exit_code == 3 and err.kind == "numeric"
    assert format_error(err) == (
        "error[numeric]: the loss became nan at step 7: linear here made the step's first "
        "non-finite value\n"
        f"  --> {tmp_path / 'net.dp'}:2:15\n"
        "   |\n"
        " 2 | Net(x) = relu(W x + b)\n"
        "   |               ^^^\n"
        "   = note: its inputs were finite and the result overflowed: inf at [0, 0] of [4, 2]; "
        "the model's input reaches 1, the parameter 'Net.W' reaches 3e+38\n"
        "   = note: training stopped before updating: try a smaller learning rate; the last "
        "good checkpoint is unchanged")


CONV_RELU = """\
Net: R^(1, 4, 4) -> R^2
Net(x) = FeedForward(global_avgpool2d(relu(conv2d(x, W, b))); m = 2)
  param W: R^(3, 1, 3, 3) ~ glorot
  param b: R^3 ~ zeros
"""


@pytest.mark.parametrize("prim, text, shape, span", [
    ("linear", FUSED, (4, 3), (2, 10, 23)),  # relu(W x + b)
    ("conv2d", CONV_RELU, (4, 1, 4, 4), (2, 39, 60)),  # relu(conv2d(x, W, b))
])
def test_a_value_only_a_fused_kernel_makes_is_found_in_the_plan_training_ran(
        tmp_path, monkeypatch, prim, text, shape, span):
    """When the unfused plan stays finite (a fused kernel computes otherwise), the fused plan
    is searched: here a fused linear (or conv2d) with relu made to give inf, named as the
    fused step it is."""
    model = _model(tmp_path, text)
    model.init(0)
    original = PRIMITIVES[prim]

    def forward(*args, relu=False, **params):
        out = original.forward(*args, relu=relu, **params)
        if not relu:
            return out
        return (out[0] + np.float32(np.inf), out[1]) if original.saves else out + np.float32(
            np.inf)
    monkeypatch.setitem(PRIMITIVES, prim, dataclasses.replace(original, forward=forward))
    x, y = np.ones(shape, np.float32), np.zeros((4, 2), np.float32)
    err = diagnose(model, "squared_error", x, y, None, 3, "the loss became inf at step 3")
    assert err.message == (f"the loss became inf at step 3: {prim} with relu (fused) here "
                           "made the step's first non-finite value")
    assert (err.span.line, err.span.col, err.span.end_col) == span


def test_a_finite_batch_has_no_diagnosis(tmp_path):
    model = _model(tmp_path, FUSED)
    model.init(0)
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    assert diagnose(model, "squared_error", x, y, None, 1, "the loss became nan") is None


def test_a_division_by_zero_names_the_divisor(tmp_path):
    model = _model(tmp_path, "Net: R^3 -> R^3\nNet(x) = W x / x\n  param W: R^(3, 3) ~ glorot\n")
    model.init(0)
    x = np.array([[1, 2, 3], [4, 0, 6]], np.float32)
    err = diagnose(model, "squared_error", x, np.zeros((2, 3), np.float32), None, 1,
                   "the loss became inf at step 1")
    assert err.message == ("the loss became inf at step 1: div here made the step's first "
                           "non-finite value")
    assert (err.span.line, err.span.col, err.span.end_col) == (2, 10, 17)
    assert err.notes[0] == ("a division by zero: the divisor, the model's input, has 0 at "
                            "[1, 1] of [2, 3]")


# ---- no warnings outside training either ----------------------------------------------------

def test_the_python_api_returns_non_finite_values_without_warnings():
    prog = dp.loads("Net: R^3 -> R^3\nNet(x) = log(W x) + sqrt(x) / (x - 1)\n"
                    "  param W: R^(3, 3) ~ glorot\n")
    net = prog.model("Net", seed=0)
    x = np.array([[1, -2, 3], [0, 0, 0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = net(x)
        _, pullback = net.vjp(x)
        dx, dparams = pullback(np.ones_like(out))
        loss, _ = net.value_and_grad(x, np.zeros((2, 3), np.float32), loss="squared_error")
    assert np.isnan(out).any() and np.isnan(dx[0]).any() and np.isnan(loss)
    assert np.geterr()["invalid"] == "warn"  # nothing global was changed


@pytest.mark.parametrize("line, shown", [("log(-1)", "nan"), ("log(0)", "-inf"),
                                         ("exp(1000)", "inf"), ("sqrt(-4)", "nan")])
def test_the_repl_folds_numbers_outside_a_domain_to_non_finite_values(line, shown):
    """Not `error[internal]: math domain error`: the value the primitive would give."""
    s = repl.Session(io.StringIO(), io.StringIO())
    s.feed(line)
    assert s.err.getvalue() == ""
    assert s.out.getvalue() == f"R  shape ()\n{shown}\n"


def test_a_number_outside_a_domain_checks(tmp_path):
    (tmp_path / "c.dp").write_text("Net: R^3 -> R^3\nNet(x) = x + log(-1)\n")
    code, out, err = dp_here("check", "c.dp", cwd=tmp_path)
    assert (code, err) == (0, "")
