"""Generated tasks with answers that can be checked exactly: `reversal(split = train)`, digit
strings to write backwards (a sequence-to-sequence task).

The sequences are drawn from fixed seeds, so every run sees the same examples; no held-out
sequence is also a training one.
"""

from __future__ import annotations

import numpy as np
from dp.dsl.errors import DpError, Span

from . import dataset as data
from . import text

START = ">"  # id 0: the start token that `previous` begins with
VOCAB = text.Vocab((START,) + tuple("0123456789"))
SIZES = {"train": 20_000, "test": 1_000}


def _draw(split: str, length: int) -> np.ndarray:
    rng = np.random.RandomState({"train": 0, "test": 1}[split])
    return rng.randint(1, VOCAB.size, size=(SIZES[split], length))


def reversal(split: str, shape: tuple, span: Span | None) -> data.Dataset:
    """Digit strings of the model's length (x) and the same strings backwards (y)."""
    if split not in SIZES:
        raise DpError("value", f"reversal has the splits train and test, not '{split}'", span)
    if len(shape) != 1:
        raise DpError("data", "reversal feeds a model of token sequences, Token[11]^n", span)
    train = _draw("train", shape[0])
    x = train
    if split == "test":
        seen = {row.tobytes() for row in train}
        x = np.array([row for row in _draw("test", shape[0]) if row.tobytes() not in seen])
    corpus = text.Corpus(train.reshape(-1), x.reshape(-1), VOCAB, "reversal")
    return data.Dataset(x, x[:, ::-1].copy(), f"reversal ({split})", corpus)
