"""Train and run blocks -> typed records (typed.TTrain, typed.TRun), before anything is read
or trained: every setting, optimizer, data source and report is checked against the tables of
blocks.py and against the module it names (its signature, and the train block's loss).

Train blocks and `dp train --set` here; run blocks in check_runs.py; literals, data sources
and the modules named in check_sources.py. What needs the data itself (a missing file, labels
out of range, a vocabulary of another size) is left to the interpreter, which points at the
data expression.
"""

from __future__ import annotations

import os
from dataclasses import replace

from . import ast
from . import typed as T
from .blocks import LOSSES, OPTIMIZERS, OVERRIDES, SETTINGS, SOURCES, optimizer_hyper
from .check_knobs import KNOBS, knobs, override_knobs
from .check_runs import Trained, run
from .check_sources import (
    Modules,
    attempt,
    check_source,
    feeds,
    literal,
    module,
    trained_outputs,
    whole,
    written,
)
from .errors import DpError, DpErrors, suggest, where


def check_blocks(programs: list[ast.Program], modules: Modules,
                 errors: list[DpError]) -> tuple[T.TTrain | None, tuple[T.TRun, ...]]:
    """The blocks of every program, checked; the records of the last one (the user's: the
    standard library comes first). Errors are appended to `errors`."""
    train, runs = None, ()
    for program in programs:
        train, runs = _program(program, modules, errors)
    return train, runs


def _program(program: ast.Program, modules: Modules, errors: list[DpError]):
    trains = [i for i in program.items if isinstance(i, ast.TrainBlock)]
    for extra in trains[1:]:
        errors.append(DpError("name", "a program trains one module, but this is a second "
                              "train block", extra.span,
                              (f"the first is at {where(trains[0].span)}",)))
    record = attempt(errors, _train, trains[0], modules) if trains else None
    model = trains[0].model if trains else None
    known = isinstance(model, ast.Name) and model.name in modules.defined
    trained = Trained(bool(trains), model.name if known else None, record)
    runs = tuple(run(b, modules, trained, errors) for b in program.items
                 if isinstance(b, ast.RunBlock))
    return record, runs


# --- the train block --------------------------------------------------------------------------
def _train(block: ast.TrainBlock, modules: Modules) -> T.TTrain:
    errors: list[DpError] = []
    model = attempt(errors, module, block.model, modules, True)
    found = _settings(block, errors)
    loss = attempt(errors, _loss, found["loss"].value) if "loss" in found else None
    optimizer = attempt(errors, _optimizer, found["optimizer"].value) if (
        "optimizer" in found) else None
    ints = {k: attempt(errors, whole, found[k].value, k, 0 if k == "seed" else 1)
            for k in ("batch", "epochs", "steps", "seed") if k in found}
    ckpt = attempt(errors, _checkpoint, found["checkpoint"].value) if (
        "checkpoint" in found) else None
    data = attempt(errors, check_source, block.data)
    held = attempt(errors, check_source, found["eval"].value) if "eval" in found else None
    outputs = None
    if model is not None and loss is not None:
        outputs = attempt(errors, trained_outputs, *model, loss, found["loss"].value.span)
    if data is not None:
        attempt(errors, _training_data, block, data, model, "steps" in found)
    if held is not None:
        attempt(errors, _held_out, held, model)
    tuning = knobs(found, errors, ints.get("steps"), "eval" in found)
    if errors:
        raise DpErrors(sorted(errors, key=lambda e: (e.span.line, e.span.col)))
    return T.TTrain(model[0], block.model.span, data, loss, optimizer, ints.get("batch", 32),
                    ints.get("epochs", 1), ints.get("steps"), ints.get("seed", 0), ckpt, held,
                    outputs, block.span, **tuning)


def _settings(block: ast.TrainBlock, errors: list[DpError]) -> dict[str, ast.Setting]:
    found: dict[str, ast.Setting] = {}
    for s in block.settings:
        if s.name not in SETTINGS:
            notes = suggest(s.name, SETTINGS) + ("settings: " + ", ".join(SETTINGS),)
            errors.append(DpError("name", f"unknown training setting '{s.name}'", s.span, notes))
        elif s.name in found:
            errors.append(DpError("name", f"the setting '{s.name}' is given twice", s.span,
                                  (f"the first is at {where(found[s.name].span)}",)))
        else:
            found[s.name] = s
    for need in ("loss", "optimizer"):
        if need not in found:
            errors.append(DpError("name", f"the train block needs a '{need}' setting",
                                  block.span, ("e.g. loss cross_entropy; optimizer sgd(lr = "
                                               "0.1)",)))
    return found


def _loss(e: ast.Expr) -> str:
    if not isinstance(e, ast.Name):
        raise DpError("type", f"loss must name a loss ({', '.join(LOSSES)}), but it is "
                      f"{written(e)}", e.span)
    if e.name not in LOSSES:
        raise DpError("name", f"unknown loss '{e.name}'; known: {', '.join(LOSSES)}", e.span,
                      suggest(e.name, LOSSES))
    return e.name


def _optimizer(e: ast.Expr) -> T.TOptimizer:
    if isinstance(e, ast.Name):
        name, kwargs, name_span = e.name, (), e.span
    elif isinstance(e, ast.Call) and not e.args:
        name, kwargs, name_span = e.func, e.kwargs, e.func_span or e.span
    else:
        raise DpError("type", "optimizer must be like sgd(lr = 0.1, momentum = 0.9), with "
                      "named arguments", e.span)
    if name not in OPTIMIZERS:
        raise DpError("name", f"unknown optimizer '{name}'; known: "
                      f"{', '.join(sorted(OPTIMIZERS))}", name_span, suggest(name, OPTIMIZERS))
    args, spans = {}, {}
    for kw in kwargs:
        if kw.name in args:
            raise DpError("name", f"{name} is given '{kw.name}' twice", kw.span)
        if kw.name in KNOBS:  # adam(warmup = 100): a setting of its own
            raise DpError("name", f"{name} has no hyperparameter '{kw.name}': {kw.name} is a "
                          f"setting of the train block", kw.span,
                          (f"write it as a setting: ...; optimizer {name}(...); {kw.name} "
                           f"{written(kw.value)}",))
        args[kw.name] = literal(kw.value, f"{name} {kw.name}")
        spans[kw.name] = kw.value.span if kw.name in OPTIMIZERS[name] else kw.span
    hyper = optimizer_hyper(name, args, e.span, spans)
    return T.TOptimizer(name, tuple(hyper.items()), e.span)


def _checkpoint(e: ast.Expr) -> str:
    if not isinstance(e, ast.String):
        raise DpError("type", f"checkpoint is a file name in quotes, e.g. checkpoint "
                      f"\"digits.safetensors\", but it is {written(e)}", e.span)
    return e.value


def _training_data(block: ast.TrainBlock, data: T.TSource, model, steps: bool) -> None:
    if model is not None:
        feeds(data, *model)
    if not data.targets:
        raise DpError("value", f"training needs examples with targets, but "
                      f"{written(block.data)} has none", data.span)
    if data.windows and not steps:
        raise DpError("value", "training on text needs a number of steps: it draws random "
                      "windows, so there are no epochs", block.span, ("e.g. steps 300",))


def _held_out(held: T.TSource, model) -> None:
    if held.windows:
        raise DpError("value", "eval reads held-out data, e.g. text(...; split = test)",
                      held.span)
    if not held.targets:
        raise DpError("value", f"eval needs examples with targets, but {held.kind}(...) has "
                      "none", held.span)
    if model is not None:
        feeds(held, *model)


# --- dp train --set ---------------------------------------------------------------------------
def override(train: T.TTrain, sets: dict[str, object],
             arguments: tuple[str, ...] = ()) -> T.TTrain:
    """The train block with `dp train --set NAME=VALUE` (and --epochs, --lr, ...) applied:
    its settings in OVERRIDES and its optimizer's arguments, by the block's own rules.
    `arguments`, the trained model's configuration arguments (chosen before the program was
    checked, choices.py), are named when a name is none of these."""
    opt = train.optimizer
    hyper, changes, new, tuning = dict(opt.hyper), {}, {}, {}
    for k, v in sets.items():
        if v is None:
            continue
        if k in KNOBS:
            tuning[k] = v
        elif k in hyper:
            new[k] = _number(k, v, float)
        elif k in OVERRIDES:
            v = changes[k] = _number(k, v, int)
            if v < 0 or (v == 0 and k != "seed"):
                rule = "non-negative" if k == "seed" else "positive"
                raise DpError("usage", f"--{k} must be {rule}, but it is {v}")
        else:
            known = list(OVERRIDES) + list(hyper) + list(arguments)
            mine = (f"{train.model}'s arguments: {', '.join(arguments)}" if arguments else
                    f"{train.model} has no configuration arguments")
            raise DpError("usage", f"--set {k}: the program has no setting '{k}'", None,
                          suggest(k, known) + (f"settings: {', '.join(OVERRIDES)}; "
                                               f"{opt.name}: {', '.join(hyper)}", mine))
    if new:
        merged = optimizer_hyper(opt.name, {**hyper, **new}, opt.span)
        changes["optimizer"] = replace(opt, hyper=tuple(merged.items()))
    changes.update(override_knobs(train, tuning, changes.get("steps", train.steps)))
    return replace(train, **changes)


def _number(name: str, value, kind):
    """A value from the command line: already a number (--lr) or the text of --set."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise DpError("usage", f"--set {name}={value}: {name} must be {what}") from None


# --- dp train --data ----------------------------------------------------------------------------
def point_data(train: T.TTrain, runs: tuple[T.TRun, ...],
               path: str) -> tuple[T.TTrain, tuple[T.TRun, ...]]:
    """`--data PATH`: the train block's data read from PATH, a file in the format of the
    source it replaces (text, csv, npz: the source's other arguments stay), and so is every
    other source of the program that reads the same file or text (the held-out text of
    `eval`, the reports of the run block). PATH is as given on the command line, not relative
    to the program."""
    old = train.data
    if SOURCES[old.kind].positional is None:
        raise DpError("usage", f"--data replaces the file the train block reads, but "
                      f"{old.kind}(...) reads none", None,
                      ("--data works with text(...), csv(...) and npz(...)",))
    was = f'"{old.file}"' if old.file is not None else old.text
    now = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def moved(s: T.TSource | None) -> T.TSource | None:
        same = s is not None and (s.file, s.text) == (old.file, old.text)
        return replace(s, file=os.path.abspath(path), text=None) if same else s

    def report(r: T.TReport) -> T.TReport:
        if r.data is None or moved(r.data) is r.data:
            return r
        return replace(r, data=moved(r.data), label=r.label.replace(was, now))

    runs = tuple(replace(b, prints=tuple(replace(p, items=tuple(map(report, p.items)))
                                         for p in b.prints)) for b in runs)
    return replace(train, data=moved(train.data), eval=moved(train.eval)), runs
