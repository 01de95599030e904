"""Learning-rate schedules and warmup (`warmup N; schedule cosine`): the rate of every step by
the documented formulas, in the metrics file and on `dp plot`, overridable with --set, and a
run stopped in the middle of its schedule resumes to bitwise the uninterrupted result."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import safetensors.numpy
from conftest import dp_here
from dp.dsl import typed as T
from dp.interpreter.core.optim import make_optimizer
from dp.interpreter.training import train as train_module
from dp.interpreter.training.schedule import factor

PROGRAM = """\
Net: R^64 -> R^10
Net(x) = FeedForward(FeedForward(x) : R^16; act = identity)

train Net on digits(split = train):
  loss cross_entropy; optimizer adamw(lr = 0.01); batch 16; steps 40; seed 1
  warmup 6; schedule cosine
"""


def _records(path, kind="step") -> list[dict]:
    return [r for r in map(json.loads, open(path).read().splitlines()) if r["kind"] == kind]


def _schedule(name="constant", warmup=0, **args) -> T.TSchedule:
    return T.TSchedule(name, tuple(args.items()), warmup)


# ---- the formulas, at chosen steps --------------------------------------------------------------
@pytest.mark.parametrize("schedule, total, expected", [
    (_schedule(), 10, {1: 1.0, 10: 1.0}),
    (_schedule(warmup=4), 10, {1: 0.25, 2: 0.5, 4: 1.0, 5: 1.0, 10: 1.0}),
    (_schedule("linear"), 10, {1: 1.0, 2: 0.9, 6: 0.5, 10: 0.1}),
    (_schedule("linear", warmup=2), 12, {1: 0.5, 2: 1.0, 3: 1.0, 8: 0.5, 12: 0.1}),
    (_schedule("cosine"), 10, {1: 1.0, 6: 0.5, 10: (1 + math.cos(0.9 * math.pi)) / 2}),
    (_schedule("cosine", warmup=4), 14, {2: 0.5, 4: 1.0, 5: 1.0, 10: 0.5,
                                          14: (1 + math.cos(0.9 * math.pi)) / 2}),
    (_schedule("step", every=3, factor=0.5), 20, {1: 1.0, 3: 1.0, 4: 0.5, 7: 0.25, 20: 0.015625}),
    (_schedule("step", warmup=2, every=3, factor=0.5), 20, {1: 0.5, 2: 1.0, 5: 1.0, 6: 0.5,
                                                              12: 0.125}),
])
def test_rate_factor_at_chosen_steps(schedule, total, expected):
    assert {t: factor(schedule, total, t) for t in expected} == pytest.approx(expected, abs=1e-15)


def test_a_scheduled_rate_is_the_optimizers_rate_that_step():
    """`update(..., lr)` is the optimizer made with that lr, bit for bit (AdamW's decay too)."""
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    scheduled, fixed = make_optimizer("adamw", {"lr": 0.1}), make_optimizer("adamw", {"lr": 0.03})
    p1, p2 = p0.copy(), p0.copy()
    s1, s2 = scheduled.init_state(50, np.float32), fixed.init_state(50, np.float32)
    for t in (1, 2, 3):
        scheduled.update(p1, g, s1, t, lr=0.03)
        fixed.update(p2, g, s2, t)
    assert np.array_equal(p1, p2) and np.array_equal(s1["v"], s2["v"])


# ---- a run --------------------------------------------------------------------------------------
def test_every_steps_rate_is_in_the_metrics(tmp_path):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    code, out, err = dp_here("train", program)
    assert code == 0, err
    assert out.splitlines()[0].endswith("with adamw, batch 16, warmup 6, cosine")
    steps = _records(tmp_path / "prog.metrics.jsonl")
    rates = [r["lr"] for r in steps]
    expected = [0.01 * t / 6 for t in range(1, 7)] + [
        0.01 * (1 + math.cos(math.pi * (t - 7) / 34)) / 2 for t in range(7, 41)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[5] == rates[6] == 0.01 and rates[-1] < 1e-4
    run = _records(tmp_path / "prog.metrics.jsonl", "run")[0]
    assert (run["warmup"], run["schedule"]) == (6, "cosine")


def test_set_changes_the_schedule_and_warmup(tmp_path):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    code, out, err = dp_here("train", program, "--set", "warmup=0", "--set",
                             "schedule=step(every = 10, factor = 0.5)")
    assert code == 0, err
    rates = [r["lr"] for r in _records(tmp_path / "prog.metrics.jsonl")]
    assert rates == [0.01 * 0.5 ** ((t - 1) // 10) for t in range(1, 41)]
    code, out, err = dp_here("train", program, "--set", "schedule=constant", "--set",
                             "warmup=0")
    assert code == 0, err
    assert {r["lr"] for r in _records(tmp_path / "prog.metrics.jsonl")} == {0.01}
    assert "warmup" not in out.splitlines()[0]


@pytest.mark.parametrize("sets, message, notes", [
    (["schedule=cosnie"], "--set schedule=cosnie: unknown schedule 'cosnie'; known: constant, "
     "linear, cosine, step", ["did you mean 'cosine'?"]),
    (["schedule=step"], "--set schedule=step: schedule step needs every, e.g. step(every = "
     "1000)", []),
    (["warmup=-3"], "--set warmup=-3: warmup must be a non-negative whole number, but it is -3",
     []),
    (["warmup=40"], "--set: warmup must be shorter than the run, but it is 40 steps and the "
     "run has 40", ["leave the warmup out, or train for longer"]),
    (["steps=5"], "--set: warmup must be shorter than the run, but it is 6 steps and the "
     "run has 5", ["leave the warmup out, or train for longer"]),
])
def test_bad_set_values_are_usage_errors(tmp_path, sets, message, notes):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    code, out, err = dp_here("train", program, *[a for s in sets for a in ("--set", s)])
    assert (code, out) == (2, "")
    assert err == f"error[usage]: {message}\n" + "".join(f"   = note: {n}\n" for n in notes)


def test_a_warmup_longer_than_a_run_of_epochs_is_an_error_at_the_setting(tmp_path):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM.replace("steps 40", "epochs 1").replace("warmup 6",
                                                                         "warmup 200"))
    code, out, err = dp_here("train", program)
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"error[value]: warmup must be shorter than the run, but it is 200 "
                          f"steps and the run has 94\n  --> {program}:6:10\n")
    assert not (tmp_path / "prog.safetensors").exists()


# ---- resuming in the middle of a schedule ---------------------------------------------------
def _interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C (a real SIGINT to this process) during step `step`: the run saves it and stops."""
    class Log(train_module.MetricsLog):
        def write(self, record):
            super().write(record)
            if record.get("kind") == "step" and record["step"] == step:
                os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(train_module, "MetricsLog", Log)


def test_resume_mid_schedule_is_bitwise_the_uninterrupted_run(tmp_path, monkeypatch):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    straight, broken = tmp_path / "straight.safetensors", tmp_path / "broken.safetensors"
    assert dp_here("train", program, "--checkpoint", straight)[0] == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 17)
        code, out, err = dp_here("train", program, "--checkpoint", broken)
    assert code == 130 and "training stopped at step 17 of 40" in err
    code, out, err = dp_here("train", program, "--checkpoint", broken, "--resume")
    assert code == 0, err
    assert f"resuming from {broken} at step 17" in out
    a, b = safetensors.numpy.load_file(str(straight)), safetensors.numpy.load_file(str(broken))
    assert sorted(a) == sorted(b)
    for k in a:  # parameters, AdamW's state and the random streams
        assert np.array_equal(a[k], b[k]), k
    rows = [[(r["step"], r["loss"], r["lr"]) for r in _records(str(p)[:-12] + ".metrics.jsonl")]
            for p in (straight, broken)]
    assert rows[0] == rows[1] and len(rows[0]) == 40


def test_resume_with_another_schedule_or_length_is_refused(tmp_path, monkeypatch):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    with monkeypatch.context() as m:
        _interrupt_at(m, 10)
        assert dp_here("train", program)[0] == 130
    ckpt = tmp_path / "prog.safetensors"
    code, out, err = dp_here("train", program, "--resume", "--set", "steps=50")
    assert code == 1
    assert err == (f"error[checkpoint]: --resume: {ckpt} was trained with other learning "
                   f"rates: warmup 6, schedule cosine, steps 40, this run has warmup 6, "
                   f"schedule cosine, steps 50\n"
                   f"   = note: the rate of every step depends on the warmup, the schedule "
                   f"and, when it decays, the run's length: resume with the same\n")
    code, out, err = dp_here("train", program, "--resume", "--set", "schedule=constant",
                             "--set", "warmup=0")
    assert code == 1 and "this run has a constant rate" in err
    code, out, err = dp_here("train", program, "--resume")
    assert code == 0, err


def test_plot_draws_the_learning_rate(tmp_path):
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    assert dp_here("train", program)[0] == 0
    from dp.interpreter.commands.plot import curves
    from dp.interpreter.training.metrics import read_records
    c = curves(read_records(str(tmp_path / "prog.metrics.jsonl")), "prog")
    assert c.lr_steps == list(range(1, 41)) and c.rate_varies()
    code, out, err = dp_here("plot", program)
    assert (code, err) == (0, "")
    from PIL import Image
    with Image.open(tmp_path / "prog.loss.png") as im:  # loss and learning rate side by side
        assert im.size[0] >= 1300
