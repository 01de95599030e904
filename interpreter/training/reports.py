"""A program's `run` block: print accuracies, losses, predictions and timings of modules.

    run:
      print accuracy(Digits, digits(split = test))
      print predict(Digits, digits(split = test), 5)
      print time(AlexNet, random(n = 8))
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dp.dsl import ast
from dp.dsl.errors import DpError
from dp.dsl.errors import suggest as _suggest
from dp.interpreter.core.model import Model, check_loss
from dp.interpreter.data import text
from dp.interpreter.data.sources import Windows, dataset, fit_data, fit_inputs, literal

from .generate import generate_report

REPORTS = {"accuracy": 2, "exact_match": 2, "loss": 2, "predict": 3, "params": 1, "time": 2,
           "baseline": 2, "generate": 3}
GENERATE = ("temperature", "top_k", "seed")


def source_text(span, sources: dict[str, str]) -> str:
    lines = sources.get(span.file, "").splitlines()
    if span.line == span.end_line and 1 <= span.line <= len(lines):
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    return "value"


def run_block(block: ast.RunBlock, models: dict[str, Model], loss: str, base_dir: str,
              sources: dict[str, str], out=sys.stdout) -> None:
    for p in block.prints:
        parts = [_value(e, models, loss, base_dir, sources) for e in p.exprs]
        print(" ".join(parts), file=out, flush=True)


def check_block(block: ast.RunBlock, models: dict[str, Model]) -> None:
    """What can be known before training: each print names a report, with the right number of
    arguments, of the trained module (so a typo does not wait for the end of training)."""
    for p in block.prints:
        for e in p.exprs:
            if isinstance(e, (ast.String, ast.Number)):
                continue
            _report(e)
            _model(e.args[0], models)


def _report(e: ast.Expr) -> int:
    if not isinstance(e, ast.Call) or e.func not in REPORTS:
        raise DpError("name", "print shows text, accuracy(M, data), exact_match(M, data), "
                      "loss(M, data), predict(M, data, n), params(M), time(M, data), "
                      "baseline(M, text) or generate(M, \"prompt\", n)", e.span,
                      _suggest(getattr(e, "func", ""), REPORTS))
    nargs = REPORTS[e.func]
    if len(e.args) != nargs:
        raise DpError("arity", f"{e.func} takes {nargs} arguments, but {len(e.args)} "
                      f"{'was' if len(e.args) == 1 else 'were'} given", e.span)
    return nargs


def _model(e: ast.Expr, models: dict[str, Model]) -> Model:
    if isinstance(e, ast.Name) and e.name in models:
        return models[e.name]
    raise DpError("name", "expected the trained module here" +
                  (f" ({', '.join(models)})" if models else ""), e.span)


def _value(e: ast.Expr, models, loss: str, base_dir: str, sources) -> str:
    if isinstance(e, ast.String):
        return e.value
    if isinstance(e, ast.Number):
        return e.text
    _report(e)
    label = source_text(e.span, sources)
    model = _model(e.args[0], models)
    if e.func == "params":
        return f"{label} = {model.num_params:,}"
    if e.func == "generate":
        return generate_report(model, e)
    ds = dataset(e.args[1], base_dir, model.arg_shapes[0], model.vocab)
    if isinstance(ds, Windows):
        raise DpError("value", f"{e.func} reads the held-out text: text(...; split = test)",
                      e.args[1].span)
    if e.func == "baseline":
        return f"{label} = {_baseline(ds, e.args[1])}"
    if e.func == "time":
        return f"{label} = {_timing(model, fit_inputs(ds, model, e.args[1].span).x)}"
    scoring = e.func in ("accuracy", "exact_match", "predict")
    ds = fit_data(ds, model, "cross_entropy" if scoring else loss, e.args[1].span)
    if e.func == "loss":
        check_loss(loss, model, e.span)
        return f"{label} = {model.loss(loss, ds.x, ds.y):.4f}"
    scores = model.predict(ds.x)
    if e.func == "accuracy":
        right, total = accuracy_counts(scores, ds.y)
        return f"{label} = {right / max(total, 1):.4f} ({right}/{total})"
    if e.func == "exact_match":  # the examples with every scored token right
        wrong = (scores.argmax(axis=-1) != ds.y) & (ds.y >= 0)
        right = int(np.sum(~wrong.reshape(len(ds), -1).any(axis=1)))
        return f"{label} = {right / max(len(ds), 1):.4f} ({right}/{len(ds)})"
    n = literal(e.args[2], "the number of examples")
    if not isinstance(n, int) or n <= 0:
        raise DpError("value", "the number of examples must be a positive whole number",
                      e.args[2].span)
    guesses = scores[:n].argmax(axis=-1)
    if model.vocab is not None and guesses.ndim == 2:
        return label + "".join(_text_prediction(model.vocab, x, g, t)
                               for x, g, t in zip(ds.x, guesses, ds.y))
    shown = ", ".join(f"{int(g)} (true {int(t)})" for g, t in zip(guesses, ds.y[:n]))
    return f"{label} = {shown}"


def accuracy_counts(scores: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(right, scored): every token of a token sequence counts; a -1 label is not scored."""
    scored = y >= 0
    return int(np.sum((scores.argmax(axis=-1) == y) & scored)), int(np.sum(scored))


def _text_prediction(vocab, x, guess, target) -> str:
    """One example of a token model: its input, its output and the true output. Of masked
    text only the hidden characters are guessed; the others are shown as they were."""
    scored = target >= 0
    if x.shape == guess.shape and not scored.all():
        guess, target = np.where(scored, guess, x), np.where(scored, target, x)
    return (f"\n  {vocab.decode(x)!r}\n  -> {vocab.decode(guess)!r}"
            f"\n  (true {vocab.decode(target)!r})")


def _timing(model: Model, x: np.ndarray) -> str:
    """The forward pass over x: median wall time of repeats after one warm-up (compiling)."""
    out = model.predict(x)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < 1.0 and len(times) < 20):
        start = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - start)
    ms = 1000 * float(np.median(times))
    return (f"output {list(out.shape)} ({model.sig.result} each), {ms:.1f} ms for {len(x)} "
            f"examples, {ms / len(x):.2f} ms per example")


def _baseline(ds, e: ast.Expr) -> str:
    """What a model that ignores context gets on the held-out targets, from the training
    text's character frequencies: the unigram loss (to compare with loss(M, ...)) and the
    accuracy of always guessing the most frequent character (with accuracy(M, ...))."""
    if ds.corpus is None:
        raise DpError("value", "baseline compares with the character frequencies of a text: "
                      "give text(...; split = test)", e.span)
    y = ds.y[ds.y >= 0]
    train = ds.corpus.train_ids
    loss = text.unigram_loss(train, y, ds.vocab.size)
    top = int(np.bincount(train, minlength=ds.vocab.size).argmax())
    right = int(np.sum(y == top))
    return (f"{loss:.4f} nats/char; always {ds.vocab.chars[top]!r}: accuracy "
            f"{right / max(len(y), 1):.4f} ({right}/{len(y)})")
