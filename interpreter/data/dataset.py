"""Data sets: the bundled digits, users' `.npz` and `.csv` files, and mini-batches.

Every problem a user can cause (a missing file, a corrupt archive, a ragged csv, a NaN...) is
raised as `DpError('data', ...)` naming the file and saying what was expected against what was
found; no raw OSError/ValueError/zipfile error escapes. Arrays are never unpickled: `.npz`
files are read with `allow_pickle=False`, so object arrays are refused.

    load_digits(split)            the 8x8 digits, x: float32 [N, 64] in [0, 1], y: int64 [N]
    load_digits_images(split)     the same, x: float32 [N, 1, 8, 8]
    load_npz(path, x="x", y="y")  arrays from a `.npz` archive
    load_csv(path, label="last")  a numeric csv, optional header row, one label column
    batches(ds, batch_size, rng)  mini-batches, one permutation per epoch (as torch_ref.py)
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from dp.dsl.errors import DpError, Span

__all__ = ["Dataset", "load_digits", "load_digits_images", "load_npz", "load_csv", "batches",
           "num_batches",
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
# checks shared by the file loaders
# --------------------------------------------------------------------------------------------
def _fail(message: str, span: Span | None, notes: tuple[str, ...] = ()) -> DpError:
    return DpError("data", message, span, notes)


def _open_check(path: str, what: str, span: Span | None) -> None:
    if not os.path.exists(path):
        raise _fail(f"{what} '{path}' does not exist", span)
    if os.path.isdir(path):
        raise _fail(f"{what} '{path}' is a directory, expected a file", span)


def _index_str(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _check_finite(a: np.ndarray, label: str, path: str, span: Span | None,
                  why: str = "") -> None:
    if a.dtype.kind != "f" or a.size == 0:
        return
    finite = np.isfinite(a)
    if finite.all():
        return
    first = np.unravel_index(int(np.argmin(finite.reshape(-1))), a.shape)
    value = a[first]
    raise _fail(f"{label} in '{path}' has a non-finite value ({value}) at index "
                f"{_index_str(first)}{why}; expected finite numbers", span)


def _labels(y: np.ndarray, label: str, path: str, span: Span | None) -> np.ndarray:
    """Integer (or bool) arrays become int64 class labels, floating ones float32 targets."""
    kind = y.dtype.kind
    if kind in "biu":
        if kind == "u" and y.size and y.max() > np.iinfo(np.int64).max:
            raise _fail(f"{label} in '{path}' has labels larger than int64 can hold "
                        f"(max {y.max()})", span)
        return np.ascontiguousarray(y, dtype=np.int64)
    if kind == "f":
        _check_finite(y, label, path, span)
        with np.errstate(over="ignore", invalid="ignore"):
            y32 = np.ascontiguousarray(y, dtype=np.float32)
        _check_finite(y32, label, path, span, " after conversion to float32 (too large)")
        return y32
    raise _fail(f"{label} in '{path}' has dtype {y.dtype}; expected numbers "
                f"(integers for class labels, floats for targets)", span)


def _features(x: np.ndarray, label: str, path: str, span: Span | None) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise _fail(f"{label} in '{path}' has dtype {x.dtype}; expected a numeric array "
                    f"(bool, integer or float)", span)
    if x.dtype.kind == "f":
        _check_finite(x, label, path, span)
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        _check_finite(x32, label, path, span, " after conversion to float32 (too large)")
    return x32


def _make_dataset(x: np.ndarray, y: np.ndarray | None, xlabel: str, ylabel: str, path: str,
                  span: Span | None) -> Dataset:
    if x.ndim == 0:
        raise _fail(f"{xlabel} in '{path}' is a single number; expected an array with a "
                    f"leading example axis", span)
    if x.shape[0] == 0 or x.size == 0:
        raise _fail(f"{xlabel} in '{path}' is empty (shape {list(x.shape)}); expected at "
                    f"least one example with at least one value", span)
    xs = _features(x, xlabel, path, span)
    ys = None
    if y is not None:
        if y.ndim == 0:
            raise _fail(f"{ylabel} in '{path}' is a single number; expected one label per "
                        f"example ({x.shape[0]})", span)
        if y.shape[0] != x.shape[0]:
            raise _fail(f"{xlabel} and {ylabel} in '{path}' have different numbers of "
                        f"examples: {xlabel} has {x.shape[0]}, {ylabel} has {y.shape[0]}",
                        span)
        ys = _labels(y, ylabel, path, span)
    return Dataset(xs, ys, os.path.basename(path))


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


_OBJECT_MSG = ("array '{key}' in '{path}' has an object dtype, which dp refuses to load: "
               "reading it would need pickle, which can run arbitrary code; expected a "
               "numeric array")


def _npz_precheck(z, key: str, path: str, span: Span | None) -> None:
    """Read the member's .npy header first: refuse object dtypes, and shapes that need more
    bytes than the member holds (a tiny file must not make numpy allocate terabytes)."""
    fmt = np.lib.format
    names = z.zip.namelist()
    name = key + ".npy" if key + ".npy" in names else key
    info = z.zip.getinfo(name)
    with z.zip.open(name) as m:
        try:
            version = fmt.read_magic(m)
        except ValueError:
            return                      # not a .npy member: reported after loading
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(m, max_header_size=100_000)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(m, max_header_size=100_000)
        else:
            return                      # numpy checks the rest itself
        header_len = m.tell()
    if dtype.hasobject:
        raise _fail(_OBJECT_MSG.format(key=key, path=path), span)
    need = dtype.itemsize * math.prod(shape)
    have = info.file_size - header_len
    if need != have:
        raise _fail(f"array '{key}' in '{path}' is corrupt: its header says shape "
                    f"{list(shape)} of {dtype} ({need} bytes), but the archive holds {have} "
                    f"bytes of data", span)


def _npz_array(z, key: str, path: str, span: Span | None) -> np.ndarray:
    try:
        _npz_precheck(z, key, path, span)
        a = z[key]
    except DpError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise _fail(_OBJECT_MSG.format(key=key, path=path), span) from None
        raise _fail(f"array '{key}' in '{path}' is corrupt or not a numpy array ({e})",
                    span) from None
    except Exception as e:              # noqa: BLE001 -- zlib.error, BadZipFile, EOFError...
        raise _fail(f"array '{key}' in '{path}' is corrupt ({type(e).__name__}: {e}); "
                    f"expected a numpy array", span) from None
    if not isinstance(a, np.ndarray):
        raise _fail(f"member '{key}' of '{path}' is not a numpy array (.npy); expected an "
                    f"archive written by numpy.savez", span)
    return a


def load_npz(path: str | os.PathLike, x: str = "x", y: str | None = "y",
             span: Span | None = None) -> Dataset:
    """Arrays `x` (features, any numeric dtype -> float32) and `y` (labels: integers -> int64,
    floats -> float32; `y=None` for none) from a `.npz` archive written by `np.savez`."""
    p = os.fspath(path)
    for what, key in (("x", x), ("y", y)):
        if not isinstance(key, str) and not (what == "y" and key is None):
            raise _fail(f"the array name for {what} in '{p}' must be a string, got {key!r}",
                        span)
    _open_check(p, "data file", span)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise _fail(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
    with f:
        try:
            head = f.read(6)
            f.seek(0)
        except OSError as e:
            raise _fail(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
        if head[:4] not in _ZIP_MAGICS:
            found = ("an empty file" if not head else
                     "a single .npy array" if head.startswith(b"\x93NUMPY") else
                     "a Python pickle" if head[:1] == b"\x80" else "something else")
            raise _fail(f"data file '{p}' is not an .npz archive: expected a zip of numpy "
                        f"arrays (as written by numpy.savez), found {found}", span)
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:          # noqa: BLE001 -- BadZipFile, zlib.error, EOFError...
            raise _fail(f"data file '{p}' is not a readable .npz archive (corrupt zip: {e})",
                        span) from None
        with z:
            keys = list(z.files)
            shown = ", ".join(repr(k) for k in keys) if keys else "no arrays at all"
            for key in (x, y):
                if key is not None and key not in keys:
                    raise _fail(f"data file '{p}' has no array named '{key}'; found: {shown}",
                                span)
            xa = _npz_array(z, x, p, span)
            ya = _npz_array(z, y, p, span) if y is not None else None
    return _make_dataset(xa, ya, f"array '{x}'", f"array '{y}'", p, span)


# --------------------------------------------------------------------------------------------
# .csv
# --------------------------------------------------------------------------------------------
def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return "_" not in cell


def load_csv(path: str | os.PathLike, label: str | int | None = "last",
             span: Span | None = None) -> Dataset:
    """A numeric, comma-separated file, one example per line.

    The first row is a header when none of its cells is a number. `label` picks the label
    column: "last", "first", an index (0-based, negative counts from the end), a header name,
    or None for no labels. Labels that are all integers become int64 classes, otherwise
    float32 targets. Cells are reported by line and column, counted from 1."""
    p = os.fspath(path)
    _open_check(p, "data file", span)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _fail(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fail(f"data file '{p}' is not UTF-8 text (byte offset {e.start}); expected a "
                    f"comma-separated text file", span) from None
    if "\x00" in text:
        raise _fail(f"data file '{p}' contains NUL bytes at character offset "
                    f"{text.index(chr(0))}; expected a comma-separated text file", span)

    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue            # blank lines
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise _fail(f"data file '{p}' is not valid csv ({e})", span) from None

    header: list[str] | None = None
    if rows and not any(_is_number(c) for c in rows[0]):
        header, rows, header_line = rows[0], rows[1:], lines[0]
        lines = lines[1:]
    if not rows:
        raise _fail(f"data file '{p}' has no data rows"
                    + (" (only a header)" if header is not None else " (it is empty)")
                    + "; expected at least one line of numbers", span)

    width = len(header) if header is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            ref = (f"the header (line {header_line})" if header is not None
                   else f"line {lines[0]}")
            raise _fail(f"data file '{p}' has ragged rows: line {line} has {len(row)} "
                        f"columns, expected {width} like {ref}", span)

    try:
        if any("_" in c for row in rows for c in row):
            raise ValueError
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    col = f"column {j + 1}" + (f" ('{header[j]}')" if header else "")
                    found = f"'{cell}'" if cell else "an empty cell"
                    notes = (() if header is not None or line != lines[0] else
                             ("a header row is recognized only when none of its cells is a "
                              "number",))
                    raise _fail(f"data file '{p}' line {line}, {col}: expected a number, "
                                f"found {found}", span, notes) from None
        raise _fail(f"data file '{p}' has cells that are not numbers", span) from None

    bad = ~np.isfinite(table)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        col = f"column {j + 1}" + (f" ('{header[j]}')" if header else "")
        raise _fail(f"data file '{p}' line {lines[i]}, {col}: non-finite value "
                    f"({table[i, j]}); expected finite numbers", span)

    if label is None:
        return _make_dataset(table, None, "the data", "", p, span)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
        raise _fail(f"label column {label!r} for '{p}': expected 'last', 'first', a column "
                    f"index or a header name", span)
    if label == "last":
        li = width - 1
    elif label == "first":
        li = 0
    elif isinstance(label, (int, np.integer)):
        li = int(label) + (width if label < 0 else 0)
        if not 0 <= li < width:
            raise _fail(f"label column {label} is out of range for '{p}', which has "
                        f"{width} columns (indices 0..{width - 1}, or negative from the end)",
                        span)
    else:
        if header is None:
            raise _fail(f"label column '{label}' names a column, but '{p}' has no header row "
                        f"(its first row is numbers); use 'last', 'first' or an index", span)
        if label not in header:
            names = ", ".join(f"'{h}'" for h in header)
            raise _fail(f"data file '{p}' has no column named '{label}'; the header has: "
                        f"{names}", span)
        li = header.index(label)
    if width < 2:
        raise _fail(f"data file '{p}' has only one column, which is the label; expected "
                    f"at least one feature column besides it", span)

    yv = table[:, li]
    xv = np.delete(table, li, axis=1)
    if np.all(yv == np.round(yv)) and np.all(np.abs(yv) < 2.0 ** 62):
        ys = yv.astype(np.int64)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            ys = yv.astype(np.float32)
        if not np.isfinite(ys).all():
            i = int(np.argmin(np.isfinite(ys)))
            raise _fail(f"data file '{p}' line {lines[i]}, column {li + 1}: label too large "
                        f"for float32 ({yv[i]})", span)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = xv.astype(np.float32)
    if not np.isfinite(xs).all():
        i, j = np.argwhere(~np.isfinite(xs))[0]
        jj = j + (1 if j >= li else 0)
        raise _fail(f"data file '{p}' line {lines[i]}, column {jj + 1}: value too large for "
                    f"float32 ({xv[i, j]})", span)
    return Dataset(xs, ys, os.path.basename(p))


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
