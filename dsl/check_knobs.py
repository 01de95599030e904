"""The settings of a train block that tune a run rather than say what it trains: `warmup`,
`schedule`, `clip` and `patience` -> the fields of typed.TTrain (docs/language.md, Training).

One rule per setting, used for the block and for `dp train --set NAME=VALUE` alike: the value
of `--set` is parsed as the block's value would be and checked by the same function.
"""

from __future__ import annotations

import math
from dataclasses import replace

from . import ast
from . import typed as T
from .blocks import SCHEDULES
from .check_sources import attempt, literal, named, whole, written
from .errors import DpError, suggest

KNOBS = ("warmup", "schedule", "clip", "patience")


def knobs(found: dict[str, ast.Setting], errors: list[DpError], steps: int | None,
          held: bool) -> dict:
    """The TTrain fields `schedule`, `clip` and `patience` from the settings found; errors
    are appended. `steps`: the run's length when the block gives it; `held`: it has `eval`."""
    given = {k: found[k] for k in KNOBS if k in found}
    values = {k: attempt(errors, _RULES[k], s.value) for k, s in given.items()}
    warmup = given.get("warmup")
    schedule = replace(values.get("schedule") or T.TSchedule(),
                       warmup=values.get("warmup") or 0,
                       warmup_span=warmup.value.span if warmup else None)
    attempt(errors, check_length, schedule, steps)
    if "patience" in given and not held:
        errors.append(_no_eval(given["patience"].value.span))
    return {"schedule": schedule, "clip": values.get("clip"),
            "patience": values.get("patience")}


def check_length(schedule: T.TSchedule, steps: int | None) -> None:
    """A warmup must end before the run does (`steps`: the run's length, when known)."""
    if steps is not None and schedule.warmup >= steps:
        raise DpError("value", f"warmup must be shorter than the run, but it is "
                      f"{schedule.warmup} steps and the run has {steps}",
                      schedule.warmup_span, ("leave the warmup out, or train for longer",))


def override_knobs(train: T.TTrain, sets: dict[str, object], steps: int | None) -> dict:
    """The TTrain fields that `--set warmup=..`, `schedule=..`, `clip=..` and `patience=..`
    change, by the block's rules; a bad value is a usage error naming the --set. `steps`:
    the run's length when known, after the other --set."""
    from .parser import parse_input  # only `dp train --set` parses text here

    changes, schedule = {}, train.schedule
    for k, text in sets.items():
        try:
            value = _RULES[k](parse_input(str(text), "<command line>", 1))
        except DpError as err:
            raise DpError("usage", f"--set {k}={text}: {err.message}", None, err.notes) \
                from None
        if k == "warmup":
            schedule = replace(schedule, warmup=value, warmup_span=None)
        elif k == "schedule":
            schedule = replace(value, warmup=schedule.warmup, warmup_span=schedule.warmup_span)
        else:
            changes[k] = value
    if "patience" in changes and train.eval is None:
        raise DpError("usage", f"--set patience: {_no_eval(None).message}")
    try:
        check_length(schedule, steps)
    except DpError as err:
        raise DpError("usage", f"--set: {err.message}", None, err.notes) from None
    return changes | {"schedule": schedule}


def _no_eval(span) -> DpError:
    return DpError("value", "patience counts evaluations of held-out data, but the train "
                   "block has no eval setting", span, ("e.g. eval digits(split = test)",))


def _warmup(e: ast.Expr) -> int:
    return whole(e, "warmup", 0)


def _patience(e: ast.Expr) -> int:
    return whole(e, "patience", 1)


def _clip(e: ast.Expr) -> float:
    value = literal(e, "clip")
    if isinstance(value, str) or not math.isfinite(value) or value <= 0:
        raise DpError("value", f"clip must be a positive number (the largest gradient norm), "
                      f"but it is {written(e)}", e.span)
    return float(value)


def _schedule(e: ast.Expr) -> T.TSchedule:
    if isinstance(e, ast.Name):
        name, call = e.name, None
    elif isinstance(e, ast.Call) and not e.args:
        name, call = e.func, e
    else:
        raise DpError("type", f"schedule must name a schedule ({', '.join(SCHEDULES)}), "
                      f"such as cosine or step(every = 1000), but it is {written(e)}", e.span)
    if name not in SCHEDULES:
        raise DpError("name", f"unknown schedule '{name}'; known: {', '.join(SCHEDULES)}",
                      getattr(e, "func_span", None) or e.span, suggest(name, SCHEDULES))
    args = named(call, SCHEDULES[name], "argument") if call else {
        k: a.default for k, a in SCHEDULES[name].items()}
    for k, v in args.items():
        if v is None:
            raise DpError("value", f"schedule {name} needs {k}, e.g. {name}({k} = 1000)",
                          e.span)
    return T.TSchedule(name, tuple(args.items()), span=e.span)


_RULES = {"warmup": _warmup, "schedule": _schedule, "clip": _clip, "patience": _patience}
