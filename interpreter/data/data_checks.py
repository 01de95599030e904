"""Checks every loader of a user's file makes: the file exists, the arrays are numbers, finite,
with one label per example; each failure is `DpError('data', ...)` naming the file."""

from __future__ import annotations

import os

import numpy as np
from dp.dsl.errors import DpError, Span

from .dataset import Dataset


def data_error(message: str, span: Span | None, notes: tuple[str, ...] = ()) -> DpError:
    return DpError("data", message, span, notes)


def check_file(path: str, what: str, span: Span | None) -> None:
    if not os.path.exists(path):
        raise data_error(f"{what} '{path}' does not exist", span)
    if os.path.isdir(path):
        raise data_error(f"{what} '{path}' is a directory, expected a file", span)


def _index_str(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_finite(a: np.ndarray, label: str, path: str, span: Span | None,
                  why: str = "") -> None:
    if a.dtype.kind != "f" or a.size == 0:
        return
    finite = np.isfinite(a)
    if finite.all():
        return
    first = np.unravel_index(int(np.argmin(finite.reshape(-1))), a.shape)
    value = a[first]
    raise data_error(f"{label} in '{path}' has a non-finite value ({value}) at index "
                f"{_index_str(first)}{why}; expected finite numbers", span)


def _labels(y: np.ndarray, label: str, path: str, span: Span | None) -> np.ndarray:
    """Integer (or bool) arrays become int64 class labels, floating ones float32 targets."""
    kind = y.dtype.kind
    if kind in "biu":
        if kind == "u" and y.size and y.max() > np.iinfo(np.int64).max:
            raise data_error(f"{label} in '{path}' has labels larger than int64 can hold "
                        f"(max {y.max()})", span)
        return np.ascontiguousarray(y, dtype=np.int64)
    if kind == "f":
        check_finite(y, label, path, span)
        with np.errstate(over="ignore", invalid="ignore"):
            y32 = np.ascontiguousarray(y, dtype=np.float32)
        check_finite(y32, label, path, span, " after conversion to float32 (too large)")
        return y32
    raise data_error(f"{label} in '{path}' has dtype {y.dtype}; expected numbers "
                f"(integers for class labels, floats for targets)", span)


def _features(x: np.ndarray, label: str, path: str, span: Span | None) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise data_error(f"{label} in '{path}' has dtype {x.dtype}; expected a numeric array "
                    f"(bool, integer or float)", span)
    if x.dtype.kind == "f":
        check_finite(x, label, path, span)
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        check_finite(x32, label, path, span, " after conversion to float32 (too large)")
    return x32


def make_dataset(x: np.ndarray, y: np.ndarray | None, xlabel: str, ylabel: str, path: str,
                  span: Span | None) -> Dataset:
    if x.ndim == 0:
        raise data_error(f"{xlabel} in '{path}' is a single number; expected an array with a "
                    f"leading example axis", span)
    if x.shape[0] == 0 or x.size == 0:
        raise data_error(f"{xlabel} in '{path}' is empty (shape {list(x.shape)}); expected at "
                    f"least one example with at least one value", span)
    xs = _features(x, xlabel, path, span)
    ys = None
    if y is not None:
        if y.ndim == 0:
            raise data_error(f"{ylabel} in '{path}' is a single number; expected one label per "
                        f"example ({x.shape[0]})", span)
        if y.shape[0] != x.shape[0]:
            raise data_error(f"{xlabel} and {ylabel} in '{path}' have different numbers of "
                        f"examples: {xlabel} has {x.shape[0]}, {ylabel} has {y.shape[0]}",
                        span)
        ys = _labels(y, ylabel, path, span)
    return Dataset(xs, ys, os.path.basename(path))
