"""Gradient clipping by global norm (`clip 1.0`): every update of a run whose gradient norm is
far above the bound uses a gradient of norm at most the bound; a non-finite gradient norm
stops training (exit 3) before any update is made with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import dp_here
from dp.interpreter.core import optim
from dp.interpreter.core.kernels import optim as K
from dp.interpreter.training import checkpoint
from test_cli_numeric import SQRT

PROGRAM = """\
Fit: R^4 -> R^1
Fit(x) = FeedForward(FeedForward(x) : R^8; act = identity)

train Fit on npz("big.npz"):
  loss squared_error; optimizer sgd(lr = 0.01); batch 16; steps 30
  clip 1.0
"""


@pytest.fixture
def big(tmp_path):
    """A regression whose targets are in the hundreds: gradient norms near 1,000."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (100 * x @ np.array([1, -2, 0.5, 3]) + 50).astype(np.float32)[:, None]
    np.savez(tmp_path / "big.npz", x=x, y=y)
    program = tmp_path / "prog.dp"
    program.write_text(PROGRAM)
    return program


def _steps(path) -> list[dict]:
    return [r for r in map(json.loads, open(path).read().splitlines()) if r["kind"] == "step"]


def _recording(monkeypatch) -> list[float]:
    """The norm (float64) of the gradient every update is given."""
    seen, update = [], optim.Optimizer.update

    def record(self, params, grads, state, step, lr=None):
        seen.append(float(np.linalg.norm(grads.astype(np.float64))))
        return update(self, params, grads, state, step, lr)
    monkeypatch.setattr(optim.Optimizer, "update", record)
    return seen


def test_every_update_is_clipped_to_the_bound(big, monkeypatch):
    seen = _recording(monkeypatch)
    code, out, err = dp_here("train", big)
    assert code == 0, err
    assert "with sgd, batch 16, clip 1.0" in out
    norms = [r["grad_norm"] for r in _steps(big.parent / "prog.metrics.jsonl")]
    assert len(seen) == len(norms) == 30
    assert min(norms) > 10  # the gradient before clipping, recorded for every step
    assert max(seen) <= 1.0 and min(seen) > 1.0 - 1e-5  # after: at the bound, never above


def test_without_clip_the_same_run_diverges(big, monkeypatch):
    big.write_text(PROGRAM.replace("  clip 1.0\n", ""))
    seen = _recording(monkeypatch)
    code, out, err = dp_here("train", big)
    assert code == 3 and err.startswith("error[numeric]: the loss became ")
    assert seen[0] > 10  # the same first gradient, unclipped


def test_clip_from_the_command_line(big, monkeypatch):
    seen = _recording(monkeypatch)
    code, out, err = dp_here("train", big, "--set", "clip=0.25")
    assert code == 0, err
    assert max(seen) <= 0.25 and "clip 0.25" in out
    code, out, err = dp_here("train", big, "--set", "clip=-1")
    assert (code, out) == (2, "")
    assert err == ("error[usage]: --set clip=-1: clip must be a positive number (the largest "
                   "gradient norm), but it is -1\n")


def test_the_bound_holds_exactly_in_float32():
    """torch's factor max/(norm + 1e-6) can leave a float32 gradient a hair above the bound
    when the norm is large; clip_grad_norm scales once more then."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        g = (rng.standard_normal(4096) * 10 ** rng.uniform(1, 6)).astype(np.float32)
        bound = float(rng.uniform(0.1, 5))
        optim.clip_grad_norm(g, bound)
        assert K.sum_squares(g) <= bound * bound


# ---- a non-finite gradient ------------------------------------------------------------------
NAN = SQRT  # a finite loss and a NaN gradient (0 * inf) where an example is 0


def test_a_non_finite_gradient_norm_stops_before_the_update(tmp_path):
    """sqrt(square(W x)) at x = 0 has a finite loss and a NaN gradient (0 * inf): the step
    with the zero example is an error, and the checkpoint holds the step before it."""
    x = np.ones((20, 3), np.float32)
    x[13] = 0
    np.savez(tmp_path / "zero.npz", x=x, y=np.arange(20) % 2)
    program = tmp_path / "prog.dp"
    program.write_text(NAN)
    code, out, err = dp_here("train", program, "--checkpoint-every", "1")
    steps = _steps(tmp_path / "prog.metrics.jsonl")
    bad = len(steps) + 1  # the step that failed wrote no record
    assert code == 3 and bad > 1
    assert err.startswith(  # where the first non-finite gradient is made: tests/test_cli_numeric.py
        f"error[numeric]: the gradient norm became nan at step {bad} (the loss was finite): "
        f"the backward pass of sqrt here made the step's first non-finite gradient\n"
        f"  --> {program}:2:10\n")
    assert err.endswith("   = note: training stopped before updating: the last good "
                        "checkpoint is unchanged\n")
    tensors, meta = checkpoint.load_checkpoint(tmp_path / "prog.safetensors")
    assert meta["step"] == str(bad - 1) and np.isfinite(tensors["Net.W"]).all()
    assert all(np.isfinite(r["grad_norm"]) for r in steps)


def test_clip_does_not_hide_a_non_finite_gradient(tmp_path):
    x = np.zeros((8, 3), np.float32)
    np.savez(tmp_path / "zero.npz", x=x, y=np.arange(8) % 2)
    program = tmp_path / "prog.dp"
    program.write_text(NAN + "  clip 1.0\n")
    code, out, err = dp_here("train", program)
    assert code == 3
    assert err.startswith("error[numeric]: the gradient norm became nan at step 1 ")
    assert not (tmp_path / "prog.safetensors").exists()
