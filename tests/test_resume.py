"""`dp train --resume` ends where an uninterrupted run ends: a run
killed at any moment, even while writing a checkpoint, goes on from its last checkpoint to
bitwise the same parameters and the same per-step losses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import dp_here, program_in, run_dp
from dp.interpreter.training import checkpoint
from dp.interpreter.training.metrics import metrics_path

MASKED = """\
Tiny: Token[104]^16 -> Token[104]^16
Tiny(ts) = map(GenerateToken, BERT(ts; d = 16, layers = 1, heads = 2, ff = 32))

train Tiny on text(pydoc_topics, mask = 0.15):
  loss cross_entropy; optimizer adamw(lr = 0.003); batch 8; steps 40; seed 3
"""


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "dp.interpreter.commands.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc, lines: int, sig=signal.SIGKILL) -> tuple[str, str]:
    """Kill the run once it has printed `lines` progress lines (it goes on meanwhile, so
    the kill lands anywhere: in a step, in a checkpoint being written)."""
    for i, _ in enumerate(proc.stdout):
        if i >= lines:
            proc.send_signal(sig)
            break
    return proc.communicate(timeout=300)


def _steps(metrics) -> list[tuple]:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [(r["kind"], r["step"], r["loss"]) + tuple(r.get(k) for k in ("eval_loss",
                                                                         "eval_accuracy"))
            for r in records if r["kind"] in ("step", "epoch", "period")]


def _same_run(a, b) -> None:
    ta, tb = safetensors.numpy.load_file(str(a)), safetensors.numpy.load_file(str(b))
    assert sorted(ta) == sorted(tb)
    for k in ta:  # parameters, optimizer state and random streams
        assert np.array_equal(ta[k], tb[k]), k
    ma, mb = Path(metrics_path(str(a))), Path(metrics_path(str(b)))
    assert _steps(ma) == _steps(mb)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    program = program_in(tmp_path)
    straight, broken = tmp_path / "straight.safetensors", tmp_path / "broken.safetensors"
    code, out, err = run_dp("train", program, "--set", "epochs=30", "--checkpoint", straight)
    assert code == 0, err
    proc = _spawn("train", program, "--set", "epochs=30", "--checkpoint", broken,
                  "--checkpoint-every", "1")
    _kill_after(proc, 8)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint.load_checkpoint_or_previous(broken)[1]["step"] != "1410"
    code, out, err = run_dp("train", program, "--set", "epochs=30", "--checkpoint", broken,
                            "--resume")
    assert code == 0, err
    assert "resuming from " in out and "epoch 30/30" in out and "accuracy(Digits" in out
    _same_run(straight, broken)


def test_ctrl_c_saves_the_step_and_resumes(tmp_path):
    """SIGINT finishes the step, saves it, says how to go on and exits 130; masked text
    has two random streams (windows and masks), both restored."""
    program = program_in(tmp_path, MASKED)
    straight, broken = tmp_path / "straight.safetensors", tmp_path / "broken.safetensors"
    code, out, err = run_dp("train", program, "--checkpoint", straight)
    assert code == 0, err
    assert sum(line.startswith("step ") for line in out.splitlines()) == 10  # every tenth
    proc = _spawn("train", program, "--checkpoint", broken)
    _, err = _kill_after(proc, 2, signal.SIGINT)
    assert proc.returncode == 130
    step = int(checkpoint.load_checkpoint(broken)[1]["step"])
    assert 0 < step < 40
    assert err == (f"error[interrupted]: training stopped at step {step} of 40\n"
                   f"   = note: the checkpoint {broken} holds step {step}; go on with "
                   f"`dp train FILE --resume`\n")
    code, out, err = run_dp("train", program, "--checkpoint", broken, "--resume")
    assert code == 0, err
    assert f"resuming from {broken} at step {step}" in out
    _same_run(straight, broken)


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    program = program_in(tmp_path)
    code, out, err = dp_here("train", program, "--set", "epochs=2")
    assert code == 0, err
    before = (tmp_path / "prog.safetensors").read_bytes()
    code, out, err = dp_here("train", program, "--set", "epochs=2", "--resume")
    assert code == 0, err
    assert "resuming from" in out and "trained 94 steps" in out and "epoch" not in out
    assert (tmp_path / "prog.safetensors").read_bytes() == before
    code, out, err = dp_here("train", program, "--set", "epochs=3", "--resume")  # train longer
    assert code == 0, err
    assert "epoch 3/3" in out and "epoch 2/3" not in out and "trained 141 steps" in out


def test_damaged_checkpoint_resumes_from_the_previous_one(tmp_path):
    program = program_in(tmp_path)
    code, _, err = dp_here("train", program, "--set", "epochs=3")
    assert code == 0, err
    ckpt = tmp_path / "prog.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    code, out, err = dp_here("train", program, "--set", "epochs=3", "--resume")
    assert code == 0, err
    assert f"{ckpt} cannot be read; going on from {ckpt}.previous" in out
    assert "resuming from" in out and "at step 94" in out and "epoch 3/3" in out


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_without_previous_is_a_clear_error(tmp_path, damage):
    program = program_in(tmp_path)
    code, _, err = dp_here("train", program, "--set", "epochs=1")
    assert code == 0, err
    ckpt = tmp_path / "prog.safetensors"
    (tmp_path / "prog.safetensors.previous").unlink(missing_ok=True)
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[:len(data) - 100]
    else:
        data[-5] ^= 0x01
    ckpt.write_bytes(bytes(data))
    code, out, err = dp_here("train", program, "--resume")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error[checkpoint]: ")
    assert ("truncated" if damage == "truncate" else "checksum mismatch") in err


def test_resume_errors(tmp_path):
    program = program_in(tmp_path)
    code, out, err = dp_here("train", program, "--resume")
    assert (code, out) == (2, "")
    assert err == (f"error[usage]: --resume: there is no checkpoint at "
                   f"{tmp_path / 'prog.safetensors'} to go on from\n"
                   f"   = note: train without --resume to start a run\n")
    assert dp_here("train", program, "--set", "epochs=1")[0] == 0
    code, out, err = dp_here("train", program, "--resume", "--set", "seed=5")
    assert code == 1
    assert err.startswith(f"error[checkpoint]: --resume: {tmp_path / 'prog.safetensors'} was "
                          f"trained with seed 0, this run has 5\n")
    assert "resume with --set seed=0" in err
    program.write_text(program.read_text().replace("act = identity", "act = tanh"))
    code, out, err = dp_here("train", program, "--resume")
    assert code == 1 and "was trained from another version of the program" in err


def test_metrics_file_is_written_beside_the_checkpoint(tmp_path):
    program = program_in(tmp_path)
    program.write_text(program.read_text().replace(
        "epochs 20", "epochs 3"))
    code, out, err = dp_here("train", program)
    assert code == 0, err
    assert "epoch 3/3  loss " in out and "held-out loss " in out and "accuracy 0.9" in out
    records = [json.loads(line) for line in
               (tmp_path / "prog.metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "run" and records[0]["model"] == "Digits"
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 142))
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 47), (2, 94), (3, 141)]
    assert epochs[0]["loss"] == pytest.approx(np.mean([r["loss"] for r in steps[:47]]))
    assert 0.9 < epochs[-1]["eval_accuracy"] <= 1 and epochs[-1]["eval_loss"] < 0.5


def test_killed_at_random_moments_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL anywhere in a run that saves every step (so often in the
    middle of writing one); `dp run` then loads a verified checkpoint every time."""
    program = program_in(tmp_path)
    for lines in np.random.RandomState(0).randint(2, 12, size=3):
        proc = _spawn("train", program, "--set", "epochs=40", "--checkpoint-every", "1")
        _kill_after(proc, int(lines))
        assert proc.returncode == -signal.SIGKILL
        code, out, err = run_dp("run", program)
        assert code == 0, err
        assert out.startswith("accuracy(Digits, digits(split = test)) = ")


def test_resume_needs_the_same_optimizer_state_and_a_training_state(tmp_path):
    program = program_in(tmp_path)
    ckpt = tmp_path / "prog.safetensors"
    assert dp_here("train", program, "--set", "epochs=1", "--set", "momentum=0")[0] == 0
    code, out, err = dp_here("train", program, "--resume")
    assert (code, out) == (1, "training Digits: R^64 -> R^10 (9,610 parameters) on 1,500 "
                              "examples with sgd, batch 32\n")
    assert err == (f"error[checkpoint]: --resume: {ckpt} has no optimizer state 'momentum' "
                   f"(9,610 values)\n   = note: it was trained with other optimizer arguments; "
                   f"resume with the same --set\n")
    tensors, meta = checkpoint.load_checkpoint(ckpt)
    del meta["stream"], meta["format"], meta["sha256"]
    checkpoint.save_checkpoint(ckpt, tensors, meta)  # as an older dp wrote them
    code, out, err = dp_here("train", program, "--resume", "--set", "momentum=0")
    assert code == 1 and err == (
        f"error[checkpoint]: --resume: {ckpt} holds no training state (it was written by an "
        f"older dp)\n   = note: train without --resume to start again\n")


def test_bad_checkpoint_every_and_eval_on_training_text(tmp_path):
    program = program_in(tmp_path)
    code, out, err = dp_here("train", program, "--checkpoint-every", "0")
    assert (code, out, err) == (2, "", "error[usage]: --checkpoint-every must be a positive "
                                       "number of steps, not 0\n")
    program = program_in(tmp_path, MASKED.replace("seed 3\n", "seed 3\n  eval text(pydoc_topics, "
                                                "mask = 0.15)\n"))
    code, out, err = dp_here("train", program)
    assert (code, out) == (1, "")
    assert err == (f"error[value]: eval reads held-out data, e.g. text(...; split = test)\n"
                   f"  --> {program}:6:8\n   |\n 6 |   eval text(pydoc_topics, mask = 0.15)\n"
                   f"   |        {'^' * 31}\n")
