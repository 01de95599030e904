"""Run blocks -> typed.TRun records: each print's text and reports, every report with its
arguments and whether it suits the model it is on (from its signature, and the loss of the train
block that trains it)."""

from __future__ import annotations

from dataclasses import dataclass

from . import ast
from . import typed as T
from .blocks import GENERATE, REPORT_FORMS, REPORTS, SOURCES
from .check_sources import (
    Modules,
    attempt,
    check_source,
    feeds,
    module,
    named,
    untrained_outputs,
    whole,
    written,
)
from .errors import DpError, plural, suggest
from .types import ModSig


@dataclass(frozen=True)
class Trained:
    """What a run block knows of the program's train block: whether there is one, the module
    it trains (None: not a defined module) and its record (None: the block has errors)."""

    present: bool
    name: str | None
    record: T.TTrain | None


def run(block: ast.RunBlock, modules: Modules, trained: Trained,
        errors: list[DpError]) -> T.TRun:
    prints = tuple(T.TPrint(tuple(attempt(errors, _item, e, modules, trained)
                                  for e in p.exprs), p.span) for p in block.prints)
    return T.TRun(prints, block.span)


def _item(e: ast.Expr, modules: Modules, trained: Trained) -> T.TReport:
    if isinstance(e, ast.String):
        return T.TReport("text", e.value, e.span)
    if isinstance(e, ast.Number):
        return T.TReport("text", e.text, e.span)
    if not isinstance(e, ast.Call):
        raise DpError("type", f"print shows {REPORT_FORMS}, but this is {written(e)}", e.span)
    if e.func not in REPORTS:
        raise DpError("name", f"unknown report '{e.func}'", e.func_span or e.span,
                      suggest(e.func, REPORTS) + (f"print shows {REPORT_FORMS}",))
    report = REPORTS[e.func]
    if len(e.args) != 1 + len(report.args):
        n = len(e.args)
        raise DpError("arity", f"{e.func} takes {plural(1 + len(report.args), 'argument')}, "
                      f"{report.form}, but {n} {'was' if n == 1 else 'were'} given", e.span)
    if e.func != "generate" and e.kwargs:
        raise DpError("name", f"{e.func} has no setting '{e.kwargs[0].name}'",
                      e.kwargs[0].span, ("only generate has settings: " + ", ".join(GENERATE),))
    model = _reported(e.args[0], modules, trained, "data" in report.args)
    fields = {"model": getattr(e.args[0], "name", None), "model_span": e.args[0].span}
    if model is not None:
        fields.update(_kind(model, trained))
    for kind, a in zip(report.args, e.args[1:]):
        if kind == "data":
            fields["data"] = _report_data(e.func, a, model)
        elif kind == "count":
            fields["count"] = whole(a, f"{e.func}'s number of "
                                    f"{'characters' if e.func == 'generate' else 'examples'}",
                                    0 if e.func == "generate" else 1)
        else:
            fields["prompt"] = _prompt(a)
    if model is not None:
        _suits(e, report, model, trained, fields)
    if e.func == "generate":
        fields["options"] = tuple(named(e, GENERATE, "setting").items())
    return T.TReport(e.func, written(e), e.span, **fields)


def _reported(e: ast.Expr, modules: Modules, trained: Trained, data: bool):
    """(name, signature) of the module a report is on; None when the train block has already
    said what is wrong with it."""
    if not trained.present:
        return module(e, modules, data)
    if trained.name is None:  # the train block's error says what is wrong with its module
        return None
    if not (isinstance(e, ast.Name) and e.name == trained.name):
        raise DpError("name", f"expected {trained.name}, the module this program trains, but "
                      f"found {written(e)}", e.span)
    return None if trained.record is None else (e.name, modules.sigs[e.name])


def _kind(model: tuple[str, ModSig], trained: Trained) -> dict:
    if trained.record is not None:
        return {"loss": trained.record.loss, "outputs": trained.record.outputs}
    outputs = untrained_outputs(model[1])
    return {"loss": "squared_error" if outputs == "values" else "cross_entropy",
            "outputs": outputs}


def _report_data(report: str, e: ast.Expr, model) -> T.TSource:
    data = check_source(e)
    if data.windows:
        raise DpError("value", f"{report} reads the held-out text: text(...; split = test)",
                      data.span)
    if REPORTS[report].targets and not data.targets:
        raise DpError("value", f"{report} needs examples with targets, but {written(e)} has "
                      "none", data.span)
    if report == "baseline" and not SOURCES[data.kind].tokens:
        raise DpError("value", "baseline compares with the character frequencies of a text: "
                      "give text(...; split = test)", data.span)
    if model is not None:
        feeds(data, *model)
    return data


def _prompt(e: ast.Expr) -> str:
    if not isinstance(e, ast.String):
        raise DpError("type", f"the prompt must be a string, e.g. \"The \", but it is "
                      f"{written(e)}", e.span)
    if not e.value:
        raise DpError("value", "the prompt must have at least one character", e.span)
    return e.value


def _suits(e: ast.Call, report, model: tuple[str, ModSig], trained: Trained,
           fields: dict) -> None:
    """Whether the report suits the model: scores need classes or tokens; generate needs a
    model of tokens trained on text (whose vocabulary it writes with)."""
    name, sig = model
    if report.scores and fields["outputs"] == "values":
        why = (f"trained with {fields['loss']}" if trained.record is not None else
               f"{sig.result}, not scores R^k")
        raise DpError("type", f"{e.func} counts right classes, but {name} gives real values "
                      f"({why})", e.span, (f"print loss({name}, data) or predict({name}, "
                                           "data, n)",))
    if e.func != "generate":
        return
    arg = sig.args[0] if len(sig.args) == 1 else None
    if sig.result.vocab is None or arg is None or arg.vocab is None or arg.rank != 1:
        raise DpError("type", f"generate writes text with a model of token sequences, "
                      f"Token[V]^n -> Token[V]^n, but {name} is {sig}", e.args[0].span)
    data = trained.record.data if trained.record is not None else None
    if data is None or not SOURCES[data.kind].tokens:
        trained_on = ("this program does not train it" if data is None else
                      f"it is trained on {data.kind}(...)")
        raise DpError("value", f"generate writes with the vocabulary of the text {name} is "
                      f"trained on, but {trained_on}", e.span,
                      (f"train {name} on text(...) in this program",))

