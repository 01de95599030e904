"""The best parameters of a run with `eval`, kept beside its checkpoint as
NAME.best.safetensors (parameters and metadata, no training state: `dp run --best` runs it,
nothing resumes it), and `patience`, which ends a run that no longer improves."""

from __future__ import annotations

from dp.dsl import typed as T

from . import checkpoint


def best_path(checkpoint_path: str) -> str:
    """Where a run with `eval` keeps its best parameters: NAME.best.safetensors."""
    stem = checkpoint_path[:-len(".safetensors")] if checkpoint_path.endswith(
        ".safetensors") else checkpoint_path
    return stem + ".best.safetensors"


def keep_if_best(model, run, held_loss: float, path: str | None, meta: dict) -> bool:
    """After an evaluation: keep the parameters in `path` when the held-out loss is the lowest
    yet (written before the checkpoint that records it, so that a run killed between the two
    writes it again on resuming), else count the evaluation against the patience."""
    if not held_loss < run.best_loss:
        run.waiting += 1
        return False
    run.best_loss, run.best_step, run.waiting = held_loss, run.step, 0
    if path is None:  # a rank other than 0: only rank 0 writes
        return True
    meta = meta | {"step": str(run.step), "eval_loss": repr(held_loss)}
    if model.vocab is not None:
        meta["vocab"] = model.vocab.to_json()
    checkpoint.save_checkpoint(path, dict(model.params), meta, keep_previous=False)
    return True


def patience_over(config: T.TTrain, run) -> bool:
    """Whether `patience` evaluations have passed since the best one."""
    return config.patience is not None and run.waiting >= config.patience
