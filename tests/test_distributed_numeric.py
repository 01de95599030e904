"""A non-finite training step over several MPI processes (`dp train --workers 2`) is named
where it was made: each rank runs its share of the batch again one primitive at a time, and
rank 0 prints the first rank's diagnosis, with a note naming that rank when it is not rank 0
(whose positions are the batch's own); the generic message only when no share makes it.
Every rank stops at the same step with exit code 3 and writes no checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import run_dp
from dp.interpreter.data.dataset import Dataset
from dp.interpreter.data.streams import ExampleStream

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
LOG = """\
Net: R^3 -> R^2
Net(x) = W log(1 - x) + b
  param W: R^(2, 3) ~ glorot
  param b: R^2 ~ zeros

train Net on npz("data.npz"):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 8; steps 4; seed 0
"""
SQRT = LOG.replace("W log(1 - x) + b", "sqrt(square(W x)) + b")
CARET = ("  --> prog.dp:2:12\n"
         "   |\n"
         " 2 | Net(x) = W log(1 - x) + b\n"
         "   |            ^^^^^^^^^^\n")
STOPPED = "   = note: training stopped before updating: the last good checkpoint is unchanged\n"


def _order(n: int, seed: int = 0) -> np.ndarray:
    """The examples of the first epoch in the order training takes them (batch 8)."""
    ds = Dataset(np.arange(n, dtype=np.float32)[:, None], None, "order")
    batches = zip(ExampleStream(ds, 8, seed), range(-(-n // 8)))
    return np.concatenate([xb[:, 0] for (xb, _), _ in batches]).astype(int)


def _train(tmp_path: Path, program: str, x: np.ndarray):
    """`dp train prog.dp --workers 2` on x (labels 0, 1, 0, ...), in tmp_path."""
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(len(x)) % 2)
    (tmp_path / "prog.dp").write_text(program)
    code, out, err = run_dp("train", "prog.dp", "--workers", "2", cwd=tmp_path, timeout=120)
    assert "BAD TERMINATION" not in err and err.count("error[") == 1  # said once, by rank 0
    assert not (tmp_path / "prog.safetensors").exists()
    return code, out, err


def _log_data(bad: int, n: int = 16) -> np.ndarray:
    """Inputs in [0, 1), but 1.25 in column 1 of the `bad`-th example training takes."""
    x = np.full((n, 3), 0.5, np.float32)
    x[_order(n)[bad], 1] = 1.25
    return x


def test_a_log_only_rank_1_meets_is_named_with_its_process(tmp_path):
    code, _, err = _train(tmp_path, LOG, _log_data(bad=5))  # rank 1's share: examples 4..7
    assert code == 3
    assert err == (
        "error[numeric]: the loss became nan at step 1: log here made the step's first "
        "non-finite value\n" + CARET +
        "   = note: log of a negative value: its input, `1 - x`, has -0.25 at [1, 1] of [4, 3]\n"
        + STOPPED +
        "   = note: met by process 1 of 2, whose share of the batch is its examples 4 to 7: the "
        "positions above count from example 4\n")


def test_a_log_rank_0_meets_is_named_without_a_process(tmp_path):
    """Rank 0's positions are the batch's own, as in one process: no note (as for an error
    in the setup, which names only a process other than 0)."""
    code, _, err = _train(tmp_path, LOG, _log_data(bad=2))
    assert code == 3
    assert err == (
        "error[numeric]: the loss became nan at step 1: log here made the step's first "
        "non-finite value\n" + CARET +
        "   = note: log of a negative value: its input, `1 - x`, has -0.25 at [2, 1] of [4, 3]\n"
        + STOPPED)


def test_a_last_batch_of_one_example_leaves_rank_0_an_empty_share_and_no_hang(tmp_path):
    """9 examples, batch 8: step 2 is one example, all rank 1's; rank 0 diagnoses nothing
    but still meets rank 1 in the same collective."""
    code, _, err = _train(tmp_path, LOG, _log_data(bad=8, n=9))
    assert code == 3
    assert err == (
        "error[numeric]: the loss became nan at step 2: log here made the step's first "
        "non-finite value\n" + CARET +
        "   = note: log of a negative value: its input, `1 - x`, has -0.25 at [0, 1] of [1, 3]\n"
        + STOPPED +
        "   = note: met by process 1 of 2, whose share of the batch is its examples 0 to 0: the "
        "positions above count from example 0\n")


def test_a_non_finite_gradient_only_rank_1_meets_is_named_with_its_process(tmp_path):
    """sqrt(square(W x)) at x = 0: a finite loss, a gradient that is not (the second check)."""
    x = np.full((16, 3), 0.5, np.float32)
    x[_order(16)[6]] = 0
    code, _, err = _train(tmp_path, SQRT, x)
    assert code == 3
    assert err == (
        "error[numeric]: the gradient norm became nan at step 1 (the loss was finite): the "
        "backward pass of sqrt here made the step's first non-finite gradient\n"
        "  --> prog.dp:2:10\n"
        "   |\n"
        " 2 | Net(x) = sqrt(square(W x)) + b\n"
        "   |          ^^^^^^^^^^^^^^^^^\n"
        "   = note: the gradient of sqrt is infinite at 0 and overflows near it: its input, "
        "`square(W x)`, is 0 at [2, 0] of [4, 2]\n" + STOPPED +
        "   = note: met by process 1 of 2, whose share of the batch is its examples 4 to 7: the "
        "positions above count from example 4\n")


def test_without_a_diagnosis_on_any_rank_the_generic_message_is_said_once(tmp_path):
    """As if no share, run again, made the value (a fused kernel rounding otherwise)."""
    np.savez(tmp_path / "data.npz", x=_log_data(bad=5), y=np.arange(16) % 2)
    (tmp_path / "prog.dp").write_text(LOG)
    script = tmp_path / "script.py"
    script.write_text(f"""
import os, sys
from dp.interpreter.commands import cli
from dp.interpreter.training import train as T

T.diagnose = lambda *args: None
os.chdir({str(tmp_path)!r})
sys.exit(cli.main(["train", "prog.dp"]))
""")
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error[numeric]: the loss became nan at step 1; training "
                                  "stopped\n  --> prog.dp:6:1\n")
    assert proc.stderr.count("error[") == 1 and "met by process" not in proc.stderr
    assert not (tmp_path / "prog.safetensors").exists()
