"""The learning rate of each step: a warmup, then a schedule (docs/language.md, Training).

With lr the optimizer's rate, W the warmup, T the steps of the whole run and t the step being
taken, counting from 1, step t uses lr * factor(t):

    t <= W:            t / W
    after, with p = (t - W - 1) / (T - W), the share of the decay already done:
      constant         1
      linear           1 - p
      cosine           (1 + cos(pi * p)) / 2
      step             factor ** floor((t - W - 1) / every)

The rate is a function of the step alone, so a resumed run takes the rates an uninterrupted
one takes from the checkpoint's step and nothing else (the run's length T must be the same:
train.py checks it).
"""

from __future__ import annotations

import math

from dp.dsl import typed as T


def factor(schedule: T.TSchedule, total: int, step: int) -> float:
    """The share of the optimizer's learning rate that step `step` (from 1) of `total` uses."""
    warmup = schedule.warmup
    if step <= warmup:
        return step / warmup
    done = step - warmup - 1  # steps of the decay already taken
    if schedule.name == "linear":
        return 1.0 - done / (total - warmup)
    if schedule.name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done / (total - warmup)))
    if schedule.name == "step":
        return schedule.arg("factor") ** (done // schedule.arg("every"))
    return 1.0


def varies(schedule: T.TSchedule) -> bool:
    """Whether the rate changes during a run (the metrics and `dp plot` show it then)."""
    return schedule.warmup > 0 or schedule.name != "constant"


def describe(schedule: T.TSchedule) -> str:
    """`warmup 100, cosine` for the first line of a run, or "" for a constant rate."""
    parts = [f"warmup {schedule.warmup}"] if schedule.warmup else []
    if schedule.name != "constant":
        args = ", ".join(f"{k} = {v}" for k, v in schedule.args)
        parts.append(schedule.name + (f"({args})" if args else ""))
    return ", ".join(parts)


# --- what tunes a run, as its first line, its metrics and its checkpoint say it --------------
def tuning_text(config: T.TTrain) -> str:
    """What tunes the run, for its first line: `, warmup 100, cosine, clip 1.0`."""
    parts = [describe(config.schedule)] if varies(config.schedule) else []
    parts += [f"clip {config.clip}"] if config.clip is not None else []
    parts += [f"patience {config.patience}"] if config.patience is not None else []
    return "".join(", " + p for p in parts)


def tuning_record(config: T.TTrain) -> dict:
    """The same for the metrics file's first record."""
    s = config.schedule
    return {"warmup": s.warmup, "schedule": s.name, **dict(s.args), "clip": config.clip,
            "patience": config.patience}


def rates_record(config: T.TTrain, total: int) -> dict | None:
    """What fixes the rate of every step, saved in a checkpoint: a resumed run must have the
    same. None for a constant rate; a decaying schedule depends on the run's length."""
    s = config.schedule
    if not varies(s):
        return None
    return {"warmup": s.warmup, "schedule": s.name, **dict(s.args),
            **({"steps": total} if s.name != "constant" else {})}
