"""Training is deterministic: the same program, seed and data give bitwise the same parameters
and the same loss log, whatever the number of Numba threads; another seed gives others.

The numbers: programs/digits_mlp.dp for 2 epochs (94 steps), seed 0 twice, the sha256 of the
final parameters' bytes equal and every record of the metrics file equal but for its timings;
NUMBA_NUM_THREADS=1 against 4, the same; seed 1 against seed 0, different. Each run is a
process of its own, since Numba reads its thread count when it starts. (Kernels use `prange`
only over independent outputs, so no sum depends on how the work is split among threads.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from dp.interpreter.training import checkpoint
from dp.interpreter.training.metrics import metrics_path

TIMINGS = ("seconds",)  # what two identical runs may differ in


def _train(folder: Path, seed: int = 0, threads: int = 2) -> tuple[str, list[dict]]:
    """Train digits_mlp for 2 epochs in `folder`: (sha256 of the parameters, metrics)."""
    folder.mkdir()
    program = folder / "prog.dp"
    shutil.copy(ROOT / "programs" / "digits_mlp.dp", program)
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "train",
                           program.name, "--set", "epochs=2", "--set", f"seed={seed}"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ckpt = folder / "prog.safetensors"
    tensors, _ = checkpoint.load_checkpoint(ckpt)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        if not name.startswith(checkpoint.TRAINING_STATE):
            digest.update(name.encode() + tensors[name].tobytes())
    records = [json.loads(line) for line in Path(metrics_path(str(ckpt))).read_text()
               .splitlines()]
    return digest.hexdigest(), [{k: v for k, v in r.items() if k not in TIMINGS}
                                for r in records]


def test_same_seed_same_parameters_and_losses_at_1_and_4_threads(tmp_path):
    params, metrics = _train(tmp_path / "a", threads=4)
    assert [r["step"] for r in metrics if r["kind"] == "step"] == list(range(1, 95))
    again = _train(tmp_path / "b", threads=4)
    assert again == (params, metrics)
    one_thread = _train(tmp_path / "c", threads=1)
    assert one_thread == (params, metrics)
    other_params, other_metrics = _train(tmp_path / "d", seed=1, threads=4)
    assert other_params != params
    losses = [r["loss"] for r in metrics if r["kind"] == "step"]
    other = [r["loss"] for r in other_metrics if r["kind"] == "step"]
    assert len(other) == len(losses) and all(a != b for a, b in zip(losses[:5], other[:5]))
