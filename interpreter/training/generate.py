"""Text from a trained language model: the prompt, then one sampled token at a time.

The model reads windows of its own length n (its signature's `Token[V]^n`), as in training:
the last n tokens so far, left-aligned, and the scores at the last real position give the
next token. Positions after it are padding, which a causal body never looks at.
"""

from __future__ import annotations

import math

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import GENERATE
from dp.dsl.errors import DpError, Span
from dp.interpreter.data.text import sample


def generate(model, prompt: str, length: int, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, span: Span | None = None) -> str:
    """`prompt` and `length` more characters; the same seed gives the same text."""
    if model.vocab is None:
        raise DpError("value", f"{model.name} was not trained on text, so it has no "
                      "vocabulary to write with", span)
    ids = [int(i) for i in model.vocab.encode(prompt, span, what="the prompt")]
    if not ids:
        raise DpError("value", "the prompt must have at least one character", span)
    n = model.arg_shapes[0][0]
    rng = np.random.default_rng(seed)
    x = np.zeros((1, n), np.int64)
    for _ in range(length):
        window = ids[-n:]
        x[0, :len(window)] = window
        scores = model.predict(x)[0, len(window) - 1]
        ids.append(sample(scores.astype(np.float64), temperature, top_k, rng))
    return model.vocab.decode(np.array(ids))


def generate_report(model, report: T.TReport) -> str:
    """`generate(M, "prompt", 200; temperature = 0.8, top_k = 10, seed = 0)`, checked."""
    opts = dict(report.options)
    return generate(model, report.prompt, report.count, float(opts["temperature"]),
                    opts["top_k"], opts["seed"], report.span)


def check_flags(prompt: str, count: int, temperature: float, top_k: int, seed: int) -> None:
    """`dp generate`'s flags, by the rules of the generate report's settings (blocks.GENERATE),
    as usage errors that name the flag."""
    if not prompt:
        raise DpError("usage", "the prompt must have at least one character")
    if count < 0:
        raise DpError("usage", f"-n must be a non-negative whole number, not {count}")
    for flag, name, value in (("--temperature", "temperature", temperature),
                              ("--top-k", "top_k", top_k), ("--seed", "seed", seed)):
        arg = GENERATE[name]
        try:
            if not math.isfinite(arg.accept(value)):
                raise ValueError
        except ValueError:
            raise DpError("usage", f"{flag} must be {arg.says}, not {value}") from None
