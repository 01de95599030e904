"""Text from a trained language model: the prompt, then one sampled token at a time.

The model reads windows of its own length n (its signature's `Token[V]^n`), as in training:
the last n tokens so far, left-aligned, and the scores at the last real position give the
next token. Positions after it are padding, which a causal body never looks at.
"""

from __future__ import annotations

import numpy as np
from dp.dsl import ast
from dp.dsl.errors import DpError, Span
from dp.interpreter.data.sources import literal
from dp.interpreter.data.text import sample


def generate(model, prompt: str, length: int, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, span: Span | None = None) -> str:
    """`prompt` and `length` more characters; the same seed gives the same text."""
    if model.vocab is None:
        raise DpError("value", f"{model.name} was not trained on text, so it has no "
                      "vocabulary to write with", span)
    if model.sig.result.vocab is None:
        raise DpError("type", f"generate needs a model of tokens, but {model.name} is "
                      f"{model.sig}", span)
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


def generate_report(model, e: ast.Call) -> str:
    """`generate(M, "prompt", 200; temperature = 0.8, top_k = 10, seed = 0)` in a run block."""
    prompt, length = e.args[1], literal(e.args[2], "the length")
    if not isinstance(prompt, ast.String):
        raise DpError("type", "the prompt must be a string, e.g. \"The \"", prompt.span)
    if not isinstance(length, int) or length < 0:
        raise DpError("value", "the length must be a whole number of characters", e.args[2].span)
    opts = {"temperature": 1.0, "top_k": 0, "seed": 0}
    for kw in e.kwargs:
        if kw.name not in opts:
            raise DpError("name", f"generate has no setting '{kw.name}'; it has "
                          f"{', '.join(opts)}", kw.span)
        value = literal(kw.value, kw.name)
        bad = (not isinstance(value, (int, float)) or value < 0
               or (kw.name != "temperature" and not isinstance(value, int)))
        if bad:
            raise DpError("value", f"{kw.name} must be a non-negative "
                          f"{'number' if kw.name == 'temperature' else 'whole number'}",
                          kw.value.span)
        opts[kw.name] = value
    return generate(model, prompt.value, length, float(opts["temperature"]), opts["top_k"],
                    opts["seed"], e.span)
