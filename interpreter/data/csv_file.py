"""Users' `.csv` files: numbers separated by commas, an optional header row, one label
column."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from dp.dsl.errors import Span

from .data_checks import check_file, data_error, make_dataset
from .dataset import Dataset


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
    check_file(p, "data file", span)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise data_error(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise data_error(f"data file '{p}' is not UTF-8 text (byte offset {e.start}); expected a "
                    f"comma-separated text file", span) from None
    if "\x00" in text:
        raise data_error(f"data file '{p}' contains NUL bytes at character offset "
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
        raise data_error(f"data file '{p}' is not valid csv ({e})", span) from None

    header: list[str] | None = None
    if rows and not any(_is_number(c) for c in rows[0]):
        header, rows, header_line = rows[0], rows[1:], lines[0]
        lines = lines[1:]
    if not rows:
        raise data_error(f"data file '{p}' has no data rows"
                    + (" (only a header)" if header is not None else " (it is empty)")
                    + "; expected at least one line of numbers", span)

    width = len(header) if header is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            ref = (f"the header (line {header_line})" if header is not None
                   else f"line {lines[0]}")
            raise data_error(f"data file '{p}' has ragged rows: line {line} has {len(row)} "
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
                    raise data_error(f"data file '{p}' line {line}, {col}: expected a number, "
                                f"found {found}", span, notes) from None
        raise data_error(f"data file '{p}' has cells that are not numbers", span) from None

    bad = ~np.isfinite(table)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        col = f"column {j + 1}" + (f" ('{header[j]}')" if header else "")
        raise data_error(f"data file '{p}' line {lines[i]}, {col}: non-finite value "
                    f"({table[i, j]}); expected finite numbers", span)

    if label is None:
        return make_dataset(table, None, "the data", "", p, span)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
        raise data_error(f"label column {label!r} for '{p}': expected 'last', 'first', a column "
                    f"index or a header name", span)
    if label == "last":
        li = width - 1
    elif label == "first":
        li = 0
    elif isinstance(label, (int, np.integer)):
        li = int(label) + (width if label < 0 else 0)
        if not 0 <= li < width:
            raise data_error(f"label column {label} is out of range for '{p}', which has "
                        f"{width} columns (indices 0..{width - 1}, or negative from the end)",
                        span)
    else:
        if header is None:
            raise data_error(f"label column '{label}' names a column, but '{p}' has no header row "
                        f"(its first row is numbers); use 'last', 'first' or an index", span)
        if label not in header:
            names = ", ".join(f"'{h}'" for h in header)
            raise data_error(f"data file '{p}' has no column named '{label}'; the header has: "
                        f"{names}", span)
        li = header.index(label)
    if width < 2:
        raise data_error(f"data file '{p}' has only one column, which is the label; expected "
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
            raise data_error(f"data file '{p}' line {lines[i]}, column {li + 1}: label too large "
                        f"for float32 ({yv[i]})", span)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = xv.astype(np.float32)
    if not np.isfinite(xs).all():
        i, j = np.argwhere(~np.isfinite(xs))[0]
        jj = j + (1 if j >= li else 0)
        raise data_error(f"data file '{p}' line {lines[i]}, column {jj + 1}: value too large for "
                    f"float32 ({xv[i, j]})", span)
    return Dataset(xs, ys, os.path.basename(p))
