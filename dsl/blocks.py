"""What train and run blocks may say: settings, losses, optimizers, data sources and reports,
each with its arguments, defaults and rules (docs/language.md, Training and Running).

check_blocks.py, check_runs.py and check_sources.py check a program's blocks against these
tables; the interpreter builds its optimizers from OPTIMIZERS and reads data from the records,
so each fact is said once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import DpError, Span

SETTINGS = ("loss", "optimizer", "batch", "epochs", "steps", "seed", "checkpoint", "eval",
            "warmup", "schedule", "clip", "patience")
OVERRIDES = ("batch", "epochs", "steps", "seed",  # `dp train --set`, with optimizer arguments
             "warmup", "schedule", "clip", "patience")
LOSSES = ("cross_entropy", "squared_error", "absolute_error", "logistic", "hinge")
VALUE_LOSSES = ("squared_error", "absolute_error")  # real targets, one for every output entry
SIGN_LOSSES = ("logistic", "hinge")  # two classes by the sign of one score, R or R^1

# name -> {hyperparameter: default}; None marks a required one (torch.optim's defaults).
OPTIMIZERS: dict[str, dict[str, float | None]] = {
    "sgd": {"lr": None, "momentum": 0.0, "weight_decay": 0.0, "nesterov": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
}
_HYPER_RULES = {"lr": "positive", "momentum": "non-negative", "weight_decay": "non-negative",
                "eps": "non-negative", "beta1": "in [0, 1)", "beta2": "in [0, 1)",
                "nesterov": "0 or 1"}
_MEETS = {"positive": lambda x: x > 0, "non-negative": lambda x: x >= 0,
          "in [0, 1)": lambda x: 0 <= x < 1, "0 or 1": lambda x: x in (0.0, 1.0)}


def optimizer_hyper(name: str, args: dict, span: Span | None,
                    spans: dict[str, Span] | None = None) -> dict[str, float]:
    """Every hyperparameter of `name(args)`, defaults filled in, each checked by its rule.
    An error points at the argument's span when `spans` has it, else at `span`."""
    if name not in OPTIMIZERS:
        raise DpError("name", f"unknown optimizer '{name}'; known: "
                      f"{', '.join(sorted(OPTIMIZERS))}", span)
    known, at = OPTIMIZERS[name], (spans or {}).get
    for k in args:
        if k not in known:
            raise DpError("name", f"{name} has no hyperparameter '{k}'; "
                          f"it has {', '.join(sorted(known))}", at(k, span))
    if "lr" not in args and known["lr"] is None:
        raise DpError("value", f"{name} needs a learning rate, e.g. {name}(lr = 0.1)", span)
    hyper: dict[str, float] = {}
    for k, default in known.items():
        value = args.get(k, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DpError("type", f"{name} {k} must be a number, but it is {value!r}",
                          at(k, span))
        hyper[k] = float(value)
    for k, x in hyper.items():
        rule = "finite" if not math.isfinite(x) else _HYPER_RULES[k]
        if rule == "finite" or not _MEETS[rule](x):
            raise DpError("value", f"{name} {k} must be {rule}, but it is {args.get(k, x)}",
                          at(k, span))
    if name == "sgd" and hyper["nesterov"] and hyper["momentum"] == 0:
        raise DpError("value", "sgd nesterov = 1 needs a positive momentum",
                      at("nesterov", span))
    return hyper


# --- arguments of data sources and of generate ------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """A named argument: its default, and its rule (`accept` gives the value it stands for, or
    raises ValueError) with the rule in words for the message."""

    default: object
    says: str
    accept: Callable[[object], object]
    choices: tuple[str, ...] = ()  # the words it takes, when it takes only words


def _choice(*words: str) -> Arg:
    def accept(v):
        if v not in words:
            raise ValueError
        return v
    return Arg(words[0], ", ".join(words[:-1]) + f" or {words[-1]}", accept, words)


def _whole(lowest: int, says: str, default: int) -> Arg:
    def accept(v):
        if not isinstance(v, int) or v < lowest:
            raise ValueError
        return v
    return Arg(default, says, accept)


def _share(v):
    if isinstance(v, str) or not 0 <= v < 1:
        raise ValueError
    return v


def _array_name(v):
    if not isinstance(v, str):
        raise ValueError
    return None if v == "none" else v


def _column(v):
    if isinstance(v, float):
        raise ValueError
    return None if v == "none" else v


@dataclass(frozen=True)
class Source:
    """A data source: an example of it, what its one positional argument is (None: it takes
    none), its named arguments, the one that names its targets (`none`: no targets; "": it
    has none at all), and whether it gives token sequences (for a model of `Token[V]^n`)."""

    example: str
    positional: str | None
    args: dict[str, Arg]
    targets: str | None = None
    tokens: bool = False


SPLIT = _choice("train", "test")
SOURCES: dict[str, Source] = {
    "digits": Source("digits(split = train)", None, {"split": _choice("train", "test", "all")}),
    "npz": Source('npz("file.npz")', "file",
                  {"x": Arg("x", "the name of an array", _array_name),
                   "y": Arg("y", "the name of an array, or none", _array_name)}, "y"),
    "csv": Source('csv("file.csv")', "file",
                  {"label": Arg("last", "last, first, none, a column number or a column name "
                                "in quotes", _column)}, "label"),
    "text": Source("text(pydoc_topics)", "text",
                   {"split": SPLIT,
                    "mask": Arg(0.0, "a share of the characters, at least 0 and below 1 "
                                "(such as 0.15)", _share)}, tokens=True),
    "reversal": Source("reversal(split = train)", None, {"split": SPLIT}, tokens=True),
    "random": Source("random(n = 8)", None,
                     {"n": _whole(1, "a positive whole number", 1),
                      "seed": _whole(0, "a non-negative whole number", 0)}, ""),
}
TEXTS = ("pydoc_topics",)  # the texts known by name (`text(pydoc_topics)`); others are files


# --- learning-rate schedules (interpreter/training/schedule.py computes them) ----------------
def _below_one(v):
    if isinstance(v, str) or not 0 < v < 1:
        raise ValueError
    return float(v)


# name -> its named arguments; an argument whose default is None is required.
SCHEDULES: dict[str, dict[str, Arg]] = {
    "constant": {},
    "linear": {},
    "cosine": {},
    "step": {"every": _whole(1, "a positive whole number of steps", None),
             "factor": Arg(0.1, "a number above 0 and below 1", _below_one)},
}


def _forms(forms) -> str:
    forms = list(forms)
    return ", ".join(forms[:-1]) + f" or {forms[-1]}"


SOURCE_FORMS = _forms(s.example for s in SOURCES.values())


# --- reports of a run block -------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """A report: how it is written, its positional arguments after the module (`data`,
    `count`, `prompt`), and what it needs: data with targets, a model that scores classes,
    tokens or two classes by a score's sign (not one of real values)."""

    form: str
    args: tuple[str, ...]
    targets: bool = False
    scores: bool = False


REPORTS: dict[str, Report] = {
    "accuracy": Report("accuracy(M, data)", ("data",), targets=True, scores=True),
    "exact_match": Report("exact_match(M, data)", ("data",), targets=True, scores=True),
    "loss": Report("loss(M, data)", ("data",), targets=True),
    "predict": Report("predict(M, data, n)", ("data", "count"), targets=True),
    "params": Report("params(M)", ()),
    "time": Report("time(M, data)", ("data",)),
    "baseline": Report("baseline(M, text)", ("data",)),
    "generate": Report('generate(M, "prompt", n)', ("prompt", "count")),
}
REPORT_FORMS = _forms(["text"] + [r.form for r in REPORTS.values()])
GENERATE: dict[str, Arg] = {
    "temperature": Arg(1.0, "a non-negative number", lambda v: _nonneg(v, float)),
    "top_k": _whole(0, "a non-negative whole number", 0),
    "seed": _whole(0, "a non-negative whole number", 0),
}


def _nonneg(v, kind):
    if isinstance(v, str) or v < 0:
        raise ValueError
    return kind(v)
