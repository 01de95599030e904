"""Regression and binary classification end to end: a model of real values (R, R^1, R^k)
trains on the targets of a CSV or an npz file to a low error on a synthetic function; one score
R classifies two classes by its sign with logistic or hinge (labels 0/1 or -1/+1) on a
separable problem; the reports and the evaluation during training suit the loss; a plot of a
regression run has no accuracy panel; messages count in the singular; the REPL reports on a
loaded regression model; the shipped programs regression.dp and regression_sign.dp (slow)."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl import load
from dp.dsl.errors import DpError
from dp.interpreter.commands import repl
from dp.interpreter.commands.plot import curves
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import get
from dp.interpreter.training.metrics import read_records
from dp.interpreter.training.train import load_trained
from PIL import Image

SCORE = """\
Score: R^n -> R
Score(h) = w h + b
  param w: R^n ~ glorot
  param b: R ~ zeros
"""


def _function(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [-1, 1]^3 and y = sin(2 x1) + x2 x3 - x3 / 2 (variance about 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    return x, (np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - x[:, 2] / 2).astype(np.float32)


def _csv(path, x: np.ndarray, y: np.ndarray, header: str) -> None:
    rows = [header] + [",".join(f"{v:.6f}" for v in a) + f",{t:.6f}" for a, t in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")


def _report(out: str, name: str) -> str:
    """The value a run block printed for a report starting with `name(`."""
    line = next(line for line in out.splitlines() if line.startswith(name + "("))
    return line.split(") = ", 1)[1]


# --- regression -----------------------------------------------------------------------------
@pytest.mark.parametrize("out,body", [
    ("R", "Score(FeedForward(FeedForward(x; act = tanh) : R^32; act = tanh) : R^32)"),
    ("R^1", "FeedForward(FeedForward(FeedForward(x; act = tanh) : R^32; act = tanh) : R^32; "
            "act = identity)")])
def test_a_csv_label_column_trains_a_model_of_one_value(tmp_path, out, body):
    """The label column of a CSV (real numbers) feeds an output R or R^1 alike, and the model
    learns the function far below the targets' variance; eval prints the held-out loss and no
    accuracy; predict shows values against the true ones."""
    x, y = _function(600, 0)
    _csv(tmp_path / "train.csv", x[:500], y[:500], "a,b,c,y")
    _csv(tmp_path / "test.csv", x[500:], y[500:], "a,b,c,y")
    (tmp_path / "fit.dp").write_text(SCORE + f"""
Fit: R^3 -> {out}
Fit(x) = {body}

train Fit on csv("train.csv"):
  loss squared_error; optimizer adam(lr = 0.01); epochs 40; eval csv("test.csv")

run:
  print loss(Fit, csv("test.csv"))
  print predict(Fit, csv("test.csv"), 3)
""")
    code, stdout, err = dp_here("train", tmp_path / "fit.dp")
    assert code == 0, err
    mse = float(_report(stdout, "loss"))
    assert mse < 0.03 * np.var(y[500:]), stdout
    epochs = [line for line in stdout.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 40 and all("held-out loss" in e and "accuracy" not in e
                                     for e in epochs)
    pairs = re.findall(r"(-?[0-9.e-]+) \(true (-?[0-9.e-]+)\)", _report(stdout, "predict"))
    assert [float(t) for _, t in pairs] == pytest.approx(y[500:503].tolist(), abs=1e-3)
    assert all(abs(float(p) - float(t)) < 0.3 for p, t in pairs)


def test_npz_targets_train_a_model_of_several_values_and_a_column_feeds_r(tmp_path):
    """Targets [N, 2] train R^2 outputs; targets [N, 1] train an output R (laid out
    row-major, as inputs are); absolute_error trains as well."""
    x, y = _function(500, 1)
    two = np.stack([y, x[:, 0] - x[:, 1]], axis=1)
    np.savez(tmp_path / "d.npz", x=x, two=two, one=y[:, None])
    (tmp_path / "two.dp").write_text("""
Two: R^3 -> R^2
Two(x) = FeedForward(FeedForward(x; act = tanh) : R^32; act = identity)

train Two on npz("d.npz", y = "two"):
  loss absolute_error; optimizer adam(lr = 0.01); epochs 40

run:
  print loss(Two, npz("d.npz", y = "two"))
  print predict(Two, npz("d.npz", y = "two"), 2)
""")
    code, out, err = dp_here("train", tmp_path / "two.dp")
    assert code == 0, err
    assert float(_report(out, "loss")) < 0.1  # mean |error|; the targets' spread is ~0.6
    shown = re.findall(r"\[(-?[0-9.e-]+), (-?[0-9.e-]+)\] \(true \[(-?[0-9.e-]+), "
                       r"(-?[0-9.e-]+)\]\)", _report(out, "predict"))
    assert [tuple(map(float, s[2:])) for s in shown] == [
        pytest.approx(tuple(two[i]), abs=1e-3) for i in range(2)]
    (tmp_path / "one.dp").write_text(SCORE + """
One: R^3 -> R
One(x) = Score(FeedForward(x; act = tanh) : R^32)

train One on npz("d.npz", y = "one"):
  loss squared_error; optimizer adam(lr = 0.01); epochs 30

run:
  print loss(One, npz("d.npz", y = "one"))
""")
    code, out, err = dp_here("train", tmp_path / "one.dp")
    assert code == 0, err
    assert float(_report(out, "loss")) < 0.05 * np.var(y)


def test_targets_of_another_size_are_a_data_error(tmp_path):
    x, y = _function(20, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.stack([y, y, y], axis=1))
    (tmp_path / "p.dp").write_text(SCORE + """
One: R^3 -> R
One(x) = Score(x)

train One on npz("d.npz"):
  loss squared_error; optimizer adam(lr = 0.01)
""")
    code, out, err = dp_here("train", tmp_path / "p.dp")
    assert (code, out) == (1, "")
    assert err.startswith("error[data]: One gives outputs of shape R, but the targets have "
                          f"shape R^3\n  --> {tmp_path / 'p.dp'}:9:14\n")


# --- two classes by the sign of a score ------------------------------------------------------
def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of a disc around (0.3, -0.2) of radius 0.6 against the rest of [-1, 1]^2 (1 and -1),
    none within 0.05 of the circle."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (4 * n, 2)).astype(np.float32)
    r = np.hypot(x[:, 0] - 0.3, x[:, 1] + 0.2)
    keep = np.abs(r - 0.6) > 0.05
    x, r = x[keep][:n], r[keep][:n]
    return x, np.where(r < 0.6, 1, -1)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_a_score_classifies_by_its_sign(tmp_path, loss):
    """Labels -1/+1 from a CSV and 0/1 from an npz: the sign of the trained score is right on
    every held-out point but a few, the epoch lines count it, and predict shows the class (as
    the data labels it), the truth and the score."""
    x, t = _separable(700, 3)
    _csv(tmp_path / "train.csv", x[:500], t[:500], "u,v,side")
    np.savez(tmp_path / "test.npz", x=x[500:], y=(t[500:] > 0).astype(np.int64))
    (tmp_path / "disc.dp").write_text(SCORE + f"""
Disc: R^2 -> R
Disc(x) = Score(FeedForward(FeedForward(x; act = tanh) : R^16; act = tanh) : R^16)

train Disc on csv("train.csv"):
  loss {loss}; optimizer adam(lr = 0.02); epochs 60; eval npz("test.npz")

run:
  print accuracy(Disc, npz("test.npz"))
  print exact_match(Disc, csv("train.csv"))
  print predict(Disc, csv("train.csv"), 3)
  print predict(Disc, npz("test.npz"), 2)
""")
    code, out, err = dp_here("train", tmp_path / "disc.dp")
    assert code == 0, err
    right = re.fullmatch(r"([0-9.]+) \((\d+)/200\)", _report(out, "accuracy"))
    assert right and int(right[2]) >= 194, out
    last = [line for line in out.splitlines() if line.startswith("epoch")][-1]
    assert float(re.search(r"accuracy ([0-9.]+)", last)[1]) == float(right[1])
    assert float(_report(out, "exact_match").split()[0]) >= 0.97

    model = Model(load([str(tmp_path / "disc.dp")]), "Disc")
    load_trained(model, str(tmp_path / "disc.safetensors"))
    scores = model.predict(x[:3])
    shown = _report(out, "predict(Disc, csv")
    assert shown == ", ".join(f"{1 if s > 0 else -1} (true {t[i]}, score {float(s):.4g})"
                              for i, s in enumerate(scores))
    scores = model.predict(x[500:502])
    assert _report(out, "predict(Disc, npz") == ", ".join(
        f"{int(s > 0)} (true {int(t[500 + i] > 0)}, score {float(s):.4g})"
        for i, s in enumerate(scores))


def test_labels_that_are_not_two_classes_are_a_data_error():
    code, out, err = dp_here("train", "tests/programs/runtime/logistic_labels.dp", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == (ROOT / "tests/programs/runtime/logistic_labels.err").read_text()


@pytest.mark.parametrize("labels,found", [
    ([-1, 0, 1, 1], "-1, 0 and 1"),
    ([0.5, 1.0, 0.0, 1.0], "0, 0.5 and 1"),
    (list(np.linspace(-1, 2, 40)), "40 different values, from -1 to 2")])
def test_the_labels_error_says_what_they_are(tmp_path, labels, found):
    x = np.zeros((len(labels), 2), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(labels))
    (tmp_path / "p.dp").write_text(SCORE + """
One: R^2 -> R
One(x) = Score(x)

train One on npz("d.npz"):
  loss hinge; optimizer adam(lr = 0.01)
""")
    code, out, err = dp_here("train", tmp_path / "p.dp")
    assert (code, out) == (1, "")
    assert err.splitlines()[:2] == [
        "error[data]: hinge needs two classes labelled 0 and 1, or -1 and 1, but the labels "
        f"are {found}", f"  --> {tmp_path / 'p.dp'}:9:14"]


@pytest.mark.parametrize("program", ["block_logistic_vector", "block_cross_entropy_one_score",
                                     "block_hinge_tokens", "block_accuracy_absolute_error"])
def test_a_loss_or_report_that_does_not_suit_the_model_stops_training_before_it_starts(
        program):
    """The golden errors of `dp check` (tests/test_errors.py) are also where `dp train`
    stops, before reading any data."""
    path = f"tests/programs/errors/{program}.dp"
    code, out, err = dp_here("train", path, cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == (ROOT / f"tests/programs/errors/{program}.err").read_text()


# --- plots, words, the REPL ------------------------------------------------------------------
def test_a_regression_run_is_plotted_without_an_accuracy_panel(tmp_path):
    x, y = _function(100, 4)
    _csv(tmp_path / "d.csv", x, y, "a,b,c,y")
    (tmp_path / "r.dp").write_text(SCORE + """
R3: R^3 -> R
R3(x) = Score(x)

train R3 on csv("d.csv"):
  loss squared_error; optimizer adam(lr = 0.01); epochs 3; eval csv("d.csv")
""")
    assert dp_here("train", tmp_path / "r.dp")[0] == 0
    c = curves(read_records(str(tmp_path / "r.metrics.jsonl")), "r")
    assert len(c.eval_losses) == 3 and c.accuracies == [] and c.accuracy_steps == []
    code, out, err = dp_here("plot", tmp_path / "r.dp")
    assert (code, err) == (0, "")
    with Image.open(tmp_path / "r.loss.png") as one:
        width = one.size[0]
    (tmp_path / "c.dp").write_text((tmp_path / "r.dp").read_text().replace(
        "squared_error", "hinge").replace('csv("d.csv")', 'csv("signs.csv")'))
    _csv(tmp_path / "signs.csv", x, np.where(y > 0, 1, -1), "a,b,c,y")
    assert dp_here("train", tmp_path / "c.dp")[0] == 0
    assert len(curves(read_records(str(tmp_path / "c.metrics.jsonl")), "c").accuracies) == 3
    assert dp_here("plot", tmp_path / "c.dp")[0] == 0
    with Image.open(tmp_path / "c.loss.png") as two:
        assert two.size[0] > 1.4 * width  # the accuracy panel beside the loss


def test_one_of_a_thing_is_said_in_the_singular(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n0.5,1.0\n")
    (tmp_path / "w.dp").write_text("""
W: R -> R
W(x) = w * x
  param w: R ~ zeros

train W on csv("d.csv"):
  loss squared_error; optimizer sgd(lr = 0.1); epochs 1
""")
    code, out, err = dp_here("train", tmp_path / "w.dp")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("training W: R -> R (1 parameter) on 1 example with sgd, batch 32")
    assert lines[-1].startswith("trained 1 step in ")
    code, out, err = dp_here("plot", tmp_path / "w.dp")
    assert out.endswith(": 1 run, 1 step\n")
    with pytest.raises(DpError) as e:
        get("cross_entropy").forward(np.zeros((2, 1), np.float32), np.array([0, 1]))
    assert e.value.message == "label 1 is out of range for 1 class (expected 0..0)"


def test_the_repl_reports_on_a_loaded_regression_model(tmp_path, monkeypatch):
    """`predict(M, data, n)` and `loss(...)` in the REPL, checked as in a run block, with the
    parameters M's program trained, show values against the true ones, as `dp run` does."""
    x, y = _function(200, 5)
    _csv(tmp_path / "d.csv", x, y, "a,b,c,y")
    (tmp_path / "r.dp").write_text(SCORE + """
R3: R^3 -> R
R3(x) = Score(FeedForward(x; act = tanh) : R^16)

train R3 on csv("d.csv"):
  loss squared_error; optimizer adam(lr = 0.01); epochs 20

run:
  print predict(R3, csv("d.csv"), 3)
  print loss(R3, csv("d.csv"))
""")
    code, out, err = dp_here("train", tmp_path / "r.dp")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    s = repl.Session(io.StringIO(), io.StringIO())
    s.feed(":load r.dp")
    start = len(s.out.getvalue())
    s.feed('predict(R3, csv("d.csv"), 3)')
    s.feed('loss(R3, csv("d.csv"))')
    s.feed('accuracy(R3, csv("d.csv"))')
    assert s.out.getvalue()[start:].splitlines() == out.splitlines()[-2:]
    assert s.err.getvalue().startswith("error[type]: accuracy counts right classes, but R3 "
                                       "gives real values (trained with squared_error)\n")
    assert "predict" in s.names()


# --- the shipped programs ---------------------------------------------------------------------
@pytest.mark.slow
def test_the_regression_programs_learn_the_value_and_the_sign(tmp_path):
    """programs/regression.dp: held-out squared error far below the targets' variance, and the
    sign of its score classifies above 95%; regression_sign.dp, the same network trained with
    logistic on the signs, above 95%."""
    shutil.copytree(ROOT / "programs" / "data", tmp_path / "data")
    for name in ("regression", "regression_sign"):
        shutil.copy(ROOT / "programs" / f"{name}.dp", tmp_path)
    data = np.load(tmp_path / "data" / "regression.npz")
    code, out, err = dp_here("train", tmp_path / "regression.dp")
    assert code == 0, err
    mse = float(_report(out, "loss"))
    assert mse < 0.05 * np.var(data["y_test"]), out
    model = Model(load([str(tmp_path / "regression.dp")]), "Regress")
    load_trained(model, str(tmp_path / "regression.safetensors"))
    signs = np.where(model.predict(data["x_test"]) > 0, 1, -1)
    assert np.mean(signs == data["sign_test"]) > 0.95
    code, out, err = dp_here("train", tmp_path / "regression_sign.dp")
    assert code == 0, err
    right = re.fullmatch(r"([0-9.]+) \((\d+)/300\)", _report(out, "accuracy"))
    assert right and float(right[1]) > 0.95, out


def test_an_example_with_a_real_target_says_so_in_the_repl():
    """An example of regression data shows its target to 4 significant digits."""
    s = repl.Session(io.StringIO(), io.StringIO())
    s.feed(f'x = npz("{ROOT / "programs/data/regression.npz"}", x = "x_test", y = "y_test")[0]')
    first = s.out.getvalue().splitlines()[0]
    y = np.load(ROOT / "programs/data/regression.npz")["y_test"][0]
    assert first.endswith(f"example 0 of regression.npz, target {y:.4g}"), first
