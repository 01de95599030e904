"""Data sets: the Dataset record, the bundled digits, and mini-batches. Users' files are read
by npz.py and csv_file.py, with the checks of data_checks.py.

Every problem a user can cause (a missing file, a corrupt archive, a ragged csv, a NaN...) is
raised as `DpError('data', ...)` naming the file and saying what was expected against what was
found; no raw OSError/ValueError/zipfile error escapes.

    load_digits(split)            the 8x8 digits, x: float32 [N, 64] in [0, 1], y: int64 [N]
    load_digits_images(split)     the same, x: float32 [N, 1, 8, 8]
    npz.load_npz(path, x, y)      arrays from a `.npz` archive
    csv_file.load_csv(path)       a numeric csv, optional header row, one label column
    batches(ds, batch_size, rng)  mini-batches, one permutation per epoch (as torch_ref.py)
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from dp.dsl.errors import DpError, Span

__all__ = ["Dataset", "load_digits", "load_digits_images", "batches", "num_batches",
           "DIGITS_SPLITS", "DIGITS_SHA256"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """x: float32 with a leading example axis; y: int64 class labels, float32 targets or None."""

    x: np.ndarray
    y: np.ndarray | None
    name: str
    corpus: object = None  # the text.Corpus that token data were cut from

    @property
    def vocab(self):
        return self.corpus.vocab if self.corpus is not None else None

    def __len__(self) -> int:
        return int(self.x.shape[0])


# --------------------------------------------------------------------------------------------
# the bundled digits (see datasets/README.md for provenance)
# --------------------------------------------------------------------------------------------
DIGITS_FILE = Path(__file__).resolve().parent / "datasets" / "digits.npz"
DIGITS_SHA256 = "b2dab7b501728c22e9119ad76740b2e17c77a231e42d1e592380d90886f1a05e"
DIGITS_N = 1797
DIGITS_TRAIN = 1500
DIGITS_SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [1797, 64], y int64 [1797]) in the fixed RandomState(0) order; read-only."""
    where = str(DIGITS_FILE)
    try:
        raw = DIGITS_FILE.read_bytes()
    except OSError as e:
        raise DpError("data", f"the bundled digits data set '{where}' cannot be read "
                              f"({e.strerror or e}); reinstall dp") from None
    if hashlib.sha256(raw).hexdigest() != DIGITS_SHA256:
        raise DpError("data", f"the bundled digits data set '{where}' is corrupt "
                              f"(sha256 differs from {DIGITS_SHA256}); reinstall dp")
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    x = (images.reshape(DIGITS_N, 64).astype(np.float64) / 16.0).astype(np.float32)
    y = labels.astype(np.int64)
    perm = np.random.RandomState(0).permutation(DIGITS_N)
    x, y = x[perm], y[perm]
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits(split: str = "train", span: Span | None = None) -> Dataset:
    """The digits as flat vectors: x float32 [N, 64] = load_digits().data / 16, y int64 [N].

    The rows are in the order of `np.random.RandomState(0).permutation(1797)`; "train" is the
    first 1500, "test" the remaining 297, "all" all 1797 (permuted)."""
    x, y = _digits_arrays()
    if split == "train":
        sl = slice(0, DIGITS_TRAIN)
    elif split == "test":
        sl = slice(DIGITS_TRAIN, DIGITS_N)
    elif split == "all":
        sl = slice(0, DIGITS_N)
    else:
        raise DpError("data", f"unknown digits split {split!r}: expected one of "
                              f"'train' (1500 examples), 'test' (297) or 'all' (1797)", span)
    return Dataset(x[sl].copy(), y[sl].copy(), f"digits:{split}")


def load_digits_images(split: str = "train", span: Span | None = None) -> Dataset:
    """The digits as one-channel images: x float32 [N, 1, 8, 8]; otherwise as `load_digits`."""
    ds = load_digits(split, span)
    return Dataset(ds.x.reshape(-1, 1, 8, 8), ds.y, ds.name)


# --------------------------------------------------------------------------------------------
# mini-batches
# --------------------------------------------------------------------------------------------
def batches(ds: Dataset, batch_size: int, rng: np.random.RandomState, shuffle: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of (xb, yb) mini-batches; the last partial batch is kept.

    With `shuffle`, exactly one `rng.permutation(len(ds.x))` is drawn per call, at the call
    (not at the first `next`), and the data is indexed with it once; the batches are then
    contiguous slices (views) of the permuted copy, as in the PyTorch reference's training loop."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise DpError("usage", f"batch size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    n = len(ds.x)
    if shuffle:
        perm = rng.permutation(n)
        x = ds.x[perm]
        y = ds.y[perm] if ds.y is not None else None
    else:
        x, y = ds.x, ds.y
    return _slices(x, y, n, batch_size)


def _slices(x, y, n, batch_size):
    for i in range(0, n, batch_size):
        yield x[i:i + batch_size], (y[i:i + batch_size] if y is not None else None)


def num_batches(n: int, batch_size: int) -> int:
    """How many batches `batches` yields for n examples (the last partial one counted)."""
    return math.ceil(n / batch_size)
