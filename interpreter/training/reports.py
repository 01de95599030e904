"""A program's checked `run` block (typed.TRun): print accuracies, losses, predictions and
timings of modules.

    run:
      print accuracy(Digits, digits(split = test))
      print predict(Digits, digits(split = test), 5)
      print time(AlexNet, random(n = 8))
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import SIGN_LOSSES
from dp.interpreter.core.model import Model
from dp.interpreter.data import text
from dp.interpreter.data.sources import dataset, fit_data, fit_inputs

from .generate import generate_report


def run_block(block: T.TRun, models: dict[str, Model], base_dir: str, out=None) -> None:
    """Print each line of a checked run block; `models` has every module it reports on."""
    out = sys.stdout if out is None else out  # read when called: redirect_stdout works
    for p in block.prints:
        print(" ".join(report_value(r, models, base_dir) for r in p.items), file=out, flush=True)


def report_value(r: T.TReport, models: dict[str, Model], base_dir: str) -> str:
    """One item of a print as it is shown: its text, or a report's label and value."""
    if r.name == "text":
        return r.label
    model = models[r.model]
    if r.name == "params":
        return f"{r.label} = {model.num_params:,}"
    if r.name == "generate":
        return generate_report(model, r)
    ds = dataset(r.data, base_dir, model.arg_shapes[0], model.vocab, model.sig.args[0].vocab)
    if r.name == "baseline":
        return f"{r.label} = {_baseline(ds)}"
    if r.name == "time":
        return f"{r.label} = {_timing(model, fit_inputs(ds, model, r.data.span).x)}"
    signed = r.outputs == "signs" and ds.y is not None and bool(np.any(ds.y < 0))  # -1 and 1
    ds = fit_data(ds, model, r.loss, r.data.span)
    if r.name == "loss":
        return f"{r.label} = {model.loss(r.loss, ds.x, ds.y):.4f}"
    scores = model.predict(ds.x)
    if r.name == "accuracy":
        right, total = accuracy_counts(scores, ds.y, r.loss)
        return f"{r.label} = {right / max(total, 1):.4f} ({right}/{total})"
    if r.name == "exact_match":  # the examples with every scored token right
        wrong = (guesses(scores, r.loss) != ds.y) & (ds.y >= 0)
        right = int(np.sum(~wrong.reshape(len(ds), -1).any(axis=1)))
        return f"{r.label} = {right / max(len(ds), 1):.4f} ({right}/{len(ds)})"
    return f"{r.label}{_predictions(r, model, ds, scores, signed)}"


def _predictions(r: T.TReport, model: Model, ds, scores: np.ndarray, signed: bool) -> str:
    """The first n examples: values against the true ones (a model of real values), the
    classes guessed (of a score, by its sign, with the score), or a token model's text."""
    n = r.count
    if r.outputs == "values":
        return " = " + ", ".join(f"{_values(p)} (true {_values(t)})"
                                 for p, t in zip(scores[:n], ds.y[:n]))
    if r.outputs == "signs":  # the classes as the data labels them: 0 and 1, or -1 and 1
        low = -1 if signed else 0
        return " = " + ", ".join(
            f"{1 if g else low} (true {1 if t else low}, score {_values(s)})"
            for g, t, s in zip(scores[:n].ravel() > 0, ds.y[:n].ravel(), scores[:n].ravel()))
    guessed = scores[:n].argmax(axis=-1)
    if model.vocab is not None and guessed.ndim == 2:
        return "".join(_text_prediction(model.vocab, x, g, t)
                       for x, g, t in zip(ds.x, guessed, ds.y))
    return " = " + ", ".join(f"{int(g)} (true {int(t)})" for g, t in zip(guessed, ds.y[:n]))


def _values(a: np.ndarray) -> str:
    """One example's values, 4 significant digits: `2.5`, or `[2.5, -0.125]`."""
    flat = [f"{float(v):.4g}" for v in np.ravel(a)]
    return flat[0] if len(flat) == 1 else "[" + ", ".join(flat) + "]"


def guesses(scores: np.ndarray, loss: str) -> np.ndarray:
    """The classes a model's outputs choose: the best score's, or of one score (logistic,
    hinge) 1 where it is positive, else 0, as fit_data labels the two classes."""
    if loss in SIGN_LOSSES:
        return (scores > 0).astype(np.int64)
    return scores.argmax(axis=-1)


def accuracy_counts(scores: np.ndarray, y: np.ndarray,
                    loss: str = "cross_entropy") -> tuple[int, int]:
    """(right, scored): every token of a token sequence counts; a -1 label is not scored."""
    scored = y >= 0
    return int(np.sum((guesses(scores, loss) == y) & scored)), int(np.sum(scored))


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


def _baseline(ds) -> str:
    """What a model that ignores context gets on the held-out targets, from the training
    text's character frequencies: the unigram loss (to compare with loss(M, ...)) and the
    accuracy of always guessing the most frequent character (with accuracy(M, ...)). The
    checker sees to it that the data is text (or reversal), which has a corpus."""
    y = ds.y[ds.y >= 0]
    train = ds.corpus.train_ids
    loss = text.unigram_loss(train, y, ds.vocab.size)
    top = int(np.bincount(train, minlength=ds.vocab.size).argmax())
    right = int(np.sum(y == top))
    return (f"{loss:.4f} nats/char; always {ds.vocab.chars[top]!r}: accuracy "
            f"{right / max(len(y), 1):.4f} ({right}/{len(y)})")
