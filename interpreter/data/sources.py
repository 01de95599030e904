"""Data a checked program names (a typed.TSource: `digits(split = train)`, `npz("f.npz")`,
`csv("f.csv")`...) -> Dataset. The checker has applied the arguments' rules; what is left is
what needs the data itself (a missing file, a bad cell, labels out of range), each an
`error[data]` pointing at the data expression. File names are relative to the program's
folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import SIGN_LOSSES
from dp.dsl.errors import DpError, Span
from dp.dsl.types import Tensor

from . import csv_file, npz, tasks, text
from . import dataset as data
from .streams import WindowStream

HELD_OUT_MASKED = 100  # windows of held-out masked text: about 1,000 hidden characters at 0.15


@dataclass(frozen=True)
class Windows:
    """Training text for a language model: random windows of the model's length, drawn as
    the reference draws them (one RandomState(seed) stream of starts per step)."""

    corpus: text.Corpus
    seq: int
    span: Span
    mask: float = 0.0  # masked text: the share of characters hidden (BERT's task)

    @property
    def vocab(self) -> text.Vocab:
        return self.corpus.vocab

    def __len__(self) -> int:
        return len(self.corpus.train_ids)

    def batches(self, batch: int, seed: int):
        return iter(WindowStream(self, batch, seed))


def dataset(source: T.TSource, base_dir: str, shape: tuple[int, ...] = (),
            vocab: text.Vocab | None = None, ids: int | None = None) -> data.Dataset | Windows:
    """The data a checked source names, for a model whose input has `shape`: `random(n = 8)`
    draws n standard-normal inputs (or, for a model that reads tokens of `ids` kinds, token
    ids uniformly); `text(...)` is training windows or the held-out windows (`split = test`),
    encoded with `vocab` when the model was trained with one."""
    arg = source.arg
    if source.kind == "random":
        rng, size = np.random.default_rng(arg("seed")), (arg("n"),) + tuple(shape)
        x = (rng.standard_normal(size, np.float32) if ids is None else
             rng.integers(0, ids, size, dtype=np.int64))
        return data.Dataset(x, None, "random")
    if source.kind == "text":
        return _text(source, base_dir, shape, vocab)
    if source.kind == "reversal":
        return tasks.reversal(arg("split"), shape, source.span)
    if source.kind == "digits":
        return data.load_digits(arg("split"), source.span)
    path = os.path.join(base_dir, source.file)
    if source.kind == "npz":
        return npz.load_npz(path, arg("x"), arg("y"), source.span)
    return csv_file.load_csv(path, arg("label"), source.span)


def _text(source: T.TSource, base_dir: str, shape, vocab):
    """`text(...)`: windows for a language model, or with `mask = 0.15` masked windows (the
    mask token in 15% of the places, and only those scored) for a model like BERT."""
    if source.file is None:
        body, name = text.pydoc_topics(), source.text
    else:
        body = text.read_text(os.path.join(base_dir, source.file), source.span)
        name = source.file
    mask = source.arg("mask")
    corpus = (text.Corpus.masked if mask else text.Corpus.of)(body, vocab, name, source.span)
    if source.windows:
        return Windows(corpus, shape[0], source.span, mask)
    if not mask:
        x, y = text.heldout_windows(corpus.val_ids, shape[0], span=source.span)
        return data.Dataset(x, y, f"{name} (held out)", corpus)
    x, _ = text.heldout_windows(corpus.val_ids, shape[0], HELD_OUT_MASKED, source.span)
    x, y = text.mask_windows(x, mask, corpus.mask_id, np.random.RandomState(0))
    return data.Dataset(x, y, f"{name} (held out, masked)", corpus)


def check_vocab(ds, model, span) -> None:
    """A token model's vocabulary size must be the data's."""
    vocab = getattr(ds, "vocab", None)
    want = model.sig.result.vocab
    if vocab is not None and want is not None and vocab.size != want:
        raise DpError("data", f"{model.name} predicts tokens of a vocabulary of {want}, but "
                      f"the text has {_chars(vocab)}", span,
                      (f"write Token[{vocab.size}] in {model.name}'s signature",))


def _chars(vocab: text.Vocab) -> str:
    if text.MASK in vocab.chars:
        return f"{vocab.size - 1} distinct characters and the mask token"
    return f"{vocab.size} distinct characters"


def fit_inputs(ds: data.Dataset, model, span) -> data.Dataset:
    """The data in the model's input shape.

    Examples with the right number of values are laid out row-major in the input type, so
    the 64 pixels of a digit feed `R^64` and `R^(1, 8, 8)` alike.
    """
    want = model.arg_shapes[0]
    if ds.x.shape[1:] != want:
        size = int(np.prod(want, dtype=np.int64))
        if int(np.prod(ds.x.shape[1:], dtype=np.int64)) != size:
            values = f" ({size} values)" if len(want) > 1 else ""
            raise DpError("data", f"{model.name} expects inputs of shape {_fmt(want)}{values}, "
                          f"but the data has examples of shape {_fmt(ds.x.shape[1:])}", span)
        ds = data.Dataset(ds.x.reshape((len(ds),) + tuple(want)), ds.y, ds.name, ds.corpus)
    return ds


def fit_data(ds: data.Dataset, model, loss: str, span) -> data.Dataset:
    """The data in the model's input shape, with targets that fit the loss: class ids for
    cross_entropy, labels 0/1 for logistic and hinge, values in the output's shape for the
    others (a CSV's one label column feeds R and R^1 alike)."""
    check_vocab(ds, model, span)
    ds = fit_inputs(ds, model, span)
    if ds.y is None:
        raise DpError("data", "training needs targets, but the data has no labels", span)
    if loss == "cross_entropy":
        return _classes(ds, model, span)
    if loss in SIGN_LOSSES:
        y = sign_labels(ds.y, loss, span)
    else:
        y = ds.y.astype(model.dtype)  # real targets; whole numbers are values too
    want = model.out_shape
    if y.shape[1:] != want and math.prod(y.shape[1:]) == math.prod(want):
        y = y.reshape((len(y),) + tuple(want))  # row-major, as inputs are laid out
    if y.shape[1:] != want:
        raise DpError("data", f"{model.name} gives outputs of shape {_fmt(want)}, but the "
                      f"targets have shape {_fmt(ds.y.shape[1:])}", span)
    return data.Dataset(ds.x, y, ds.name, ds.corpus)


def _classes(ds: data.Dataset, model, span) -> data.Dataset:
    k = model.out_shape[-1]
    if ds.y.dtype.kind not in "iu":
        raise DpError("data", "cross_entropy needs integer class labels, but the labels are "
                      "real numbers", span, ("for real targets, train with loss squared_error",))
    low = -1 if ds.corpus is not None else 0  # -1: a character of masked text not scored
    if ds.y.min() < low or ds.y.max() >= k:
        two = (("for two classes by the sign of one score, train with loss logistic or "
                "hinge",) if k == 1 else ())
        classes = f"{k} class{'' if k == 1 else 'es'}"
        raise DpError("data", f"{model.name} scores {classes} (0 to {k - 1}), but the labels "
                      f"range from {ds.y.min()} to {ds.y.max()}", span, two)
    return ds


def sign_labels(y: np.ndarray, loss: str, span=None) -> np.ndarray:
    """Labels of two classes as the plan of logistic or hinge takes them, 0 and 1: the data
    says 0 and 1, or -1 and 1 (not both); anything else is an error[data] at `span`."""
    seen = np.unique(y)
    if set(seen.tolist()) <= {0, 1} or set(seen.tolist()) <= {-1, 1}:
        return (y > 0).astype(np.int64)
    if len(seen) > 5:
        found = f"{len(seen):,} different values, from {seen[0]:.4g} to {seen[-1]:.4g}"
    else:
        found = ", ".join(f"{v:.4g}" for v in seen[:-1]) + f" and {seen[-1]:.4g}"
    raise DpError("data", f"{loss} needs two classes labelled 0 and 1, or -1 and 1, but the "
                  f"labels are {found}", span,
                  ("real targets train with squared_error; k classes with scores R^k and "
                   "cross_entropy",))


def _fmt(shape) -> str:
    return str(Tensor(tuple(int(d) for d in shape)))
