"""Data named in a program (`digits(split = train)`, `npz("f.npz")`, `csv("f.csv")`) -> Dataset.

File names are relative to the program's folder. Every mistake points at the expression.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from dp.dsl import ast
from dp.dsl.errors import DpError, Span
from dp.dsl.types import Tensor

from . import dataset as data
from . import tasks, text
from .streams import WindowStream

SOURCES = {"digits": ("split",), "npz": ("x", "y"), "csv": ("label",), "random": ("n", "seed"),
           "text": ("split", "mask"), "reversal": ("split",)}
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


def literal(e: ast.Expr, what: str):
    """The value of a literal argument: a number, a string, or a bare word (`train`)."""
    if isinstance(e, ast.Number):
        return int(e.value) if e.value.is_integer() else e.value
    if isinstance(e, ast.String):
        return e.value
    if isinstance(e, ast.Name):
        return e.name
    raise DpError("type", f"{what} must be a number, a string or a word", e.span)


def dataset(e: ast.Expr, base_dir: str, shape: tuple[int, ...] = (),
            vocab: text.Vocab | None = None) -> data.Dataset | Windows:
    """The data `e` names, for a model whose input has `shape`: `random(n = 8)` draws n
    standard-normal inputs; `text(...)` is training windows or the held-out windows
    (`split = test`), encoded with `vocab` when the model was trained with one."""
    if not isinstance(e, ast.Call) or e.func not in SOURCES:
        raise DpError("name", "expected a data source: digits(split = train), "
                      "npz(\"file.npz\"), csv(\"file.csv\"), text(pydoc_topics), "
                      "reversal(split = train) or random(n = 8)", e.span)
    known = SOURCES[e.func]
    kwargs = {}
    for kw in e.kwargs:
        if kw.name not in known:
            raise DpError("name", f"{e.func} has no argument '{kw.name}'; it has "
                          f"{', '.join(known)}", kw.span)
        kwargs[kw.name] = literal(kw.value, kw.name)
    if e.func == "random":
        n, seed = kwargs.get("n", 1), kwargs.get("seed", 0)
        if e.args or not all(isinstance(v, int) and v >= 0 for v in (n, seed)) or n == 0:
            raise DpError("value", "random takes a positive whole number of examples and a "
                          "seed: random(n = 8, seed = 0)", e.span)
        x = np.random.default_rng(seed).standard_normal((n,) + tuple(shape), np.float32)
        return data.Dataset(x, None, "random")
    if e.func == "text":
        return _text(e, base_dir, shape, vocab, str(kwargs.get("split", "train")),
                     kwargs.get("mask", 0))
    if e.func == "reversal":
        return tasks.reversal(str(kwargs.get("split", "train")), shape, e.span)
    if e.func == "digits":
        if e.args:
            raise DpError("arity", "digits takes no positional arguments; use "
                          "digits(split = train)", e.span)
        return data.load_digits(str(kwargs.get("split", "train")), e.span)
    if len(e.args) != 1 or not isinstance(e.args[0], ast.String):
        raise DpError("arity", f"{e.func} takes the file name as a string, e.g. "
                      f"{e.func}(\"data.{e.func}\")", e.span)
    path = os.path.join(base_dir, e.args[0].value)
    if e.func == "npz":
        return data.load_npz(path, str(kwargs.get("x", "x")), kwargs.get("y", "y"), e.span)
    label = kwargs.get("label", "last")
    return data.load_csv(path, None if label == "none" else label, e.span)


def _text(e: ast.Call, base_dir: str, shape, vocab, split: str, mask):
    """`text(...)`: windows for a language model, or with `mask = 0.15` masked windows (the
    mask token in 15% of the places, and only those scored) for a model like BERT."""
    if len(e.args) != 1 or not isinstance(e.args[0], (ast.String, ast.Name)):
        raise DpError("arity", "text takes a file name, text(\"book.txt\"), or the text that "
                      "comes with Python, text(pydoc_topics)", e.span)
    what = e.args[0]
    if isinstance(what, ast.Name):
        if what.name != "pydoc_topics":
            raise DpError("name", f"unknown text '{what.name}'; give a file name as a string, "
                          "or pydoc_topics", what.span)
        source, name = text.pydoc_topics(), "pydoc_topics"
    else:
        source, name = text.read_text(os.path.join(base_dir, what.value), what.span), what.value
    if split not in ("train", "test"):
        raise DpError("value", f"text has the splits train and test, not '{split}'", e.span)
    if len(shape) != 1:
        raise DpError("data", "text feeds a model of token sequences, Token[V]^n", e.span)
    if isinstance(mask, str) or not 0 <= mask < 1:
        raise DpError("value", "mask is the share of characters hidden, a number from 0 to 1 "
                      "such as text(pydoc_topics, mask = 0.15)", e.span)
    corpus = (text.Corpus.masked if mask else text.Corpus.of)(source, vocab, name, e.span)
    if split == "train":
        return Windows(corpus, shape[0], e.span, mask)
    if not mask:
        x, y = text.heldout_windows(corpus.val_ids, shape[0], span=e.span)
        return data.Dataset(x, y, f"{name} (held out)", corpus)
    x, _ = text.heldout_windows(corpus.val_ids, shape[0], HELD_OUT_MASKED, e.span)
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
    """The data in the model's input shape, with targets that fit the loss."""
    check_vocab(ds, model, span)
    ds = fit_inputs(ds, model, span)
    if ds.y is None:
        raise DpError("data", "training needs targets, but the data has no labels", span)
    if loss == "cross_entropy":
        k = model.out_shape[-1]
        if ds.y.dtype.kind not in "iu":
            raise DpError("data", "cross_entropy needs integer class labels, but the labels "
                          "are real numbers", span)
        low = -1 if ds.corpus is not None else 0  # -1: a character of masked text not scored
        if ds.y.min() < low or ds.y.max() >= k:
            raise DpError("data", f"{model.name} scores {k} classes (0 to {k - 1}), but the "
                          f"labels range from {ds.y.min()} to {ds.y.max()}", span)
    elif ds.y.shape[1:] != model.out_shape:
        raise DpError("data", f"{model.name} gives outputs of shape {_fmt(model.out_shape)}, "
                      f"but the targets have shape {_fmt(ds.y.shape[1:])}", span)
    return ds


def _fmt(shape) -> str:
    return str(Tensor(tuple(int(d) for d in shape)))
