"""A run's metrics beside its checkpoint: `NAME.metrics.jsonl`, one JSON object a line.

    {"kind": "run", "program": ..., "model": ..., "steps": 940, "warmup": 0, ...}
    {"kind": "step", "step": 1, "loss": 2.3051, "lr": 0.1, "grad_norm": 3.2, "seconds": 0.004}
    {"kind": "epoch", "epoch": 1, "step": 47, "loss": 1.2034, "eval_loss": ..., "best": true}
    {"kind": "stop", "step": 470, "best_step": 329, "best_eval_loss": 0.0912}
    {"kind": "resume", "step": 470, "checkpoint": ...}

A step's `lr` is the rate it used (after warmup and schedule) and `grad_norm` the gradient's
global norm before clipping; `best` says whether an evaluation kept its parameters as the
best; `stop` is written when `patience` ends a run early.

JSON lines because a run appends as it goes, any tool reads them, and a resumed run cuts the
file back to its checkpoint's step and appends again, so that the steps match an
uninterrupted run's.
"""

from __future__ import annotations

import json
import os

from dp.dsl.errors import DpError


def metrics_path(checkpoint_path: str) -> str:
    stem = checkpoint_path[:-len(".safetensors")] if checkpoint_path.endswith(
        ".safetensors") else checkpoint_path
    return stem + ".metrics.jsonl"


class MetricsLog:
    """Appends records; `flush` comes before every checkpoint, so a checkpoint's step is
    always in the file."""

    def __init__(self, path: str, header: dict | None = None, resume_step: int | None = None,
                 note: dict | None = None):
        self.path = path
        if resume_step is not None:
            kept = [r for r in read_records(path, missing_ok=True)
                    if r.get("step", 0) <= resume_step or r.get("kind") == "run"]
            _rewrite(path, kept)
            self.f = open(path, "a", encoding="utf-8")
        else:
            self.f = open(path, "w", encoding="utf-8")
        for record in (header, note):
            if record:
                self.write(record)

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _rewrite(path: str, records: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def read_records(path: str, missing_ok: bool = False) -> list[dict]:
    """Every complete record; a last line cut short by a killed run is left out."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise DpError("usage", f"no metrics file '{path}'",
                      None, ("`dp train` writes it beside the checkpoint",)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DpError("data", f"cannot read the metrics file '{path}': {e}") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # the unfinished last line of a killed run
                break
            raise DpError("data", f"the metrics file '{path}' is damaged at line {i}: "
                          f"expected one JSON object a line") from None
        if not isinstance(r, dict):
            raise DpError("data", f"the metrics file '{path}' is damaged at line {i}: "
                          f"expected one JSON object a line")
        records.append(r)
    return records
