"""The REPL's named values: random ones (`x: R^(3, 4)`) and one example of a data set
(`d = digits(split = test)[5]`), each a type and an array of one example's shape."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from dp.dsl import ast
from dp.dsl.blocks import SOURCES
from dp.dsl.check_sources import check_source
from dp.dsl.checker import concrete_type
from dp.dsl.errors import DpError
from dp.dsl.types import Tensor
from dp.interpreter.core.lower import BYTES_LIMIT
from dp.interpreter.data.sources import dataset

EXAMPLES = ("digits", "npz", "csv")  # the data sources a value can be one example of


@dataclass(frozen=True)
class Value:
    type: Tensor
    array: np.ndarray  # one example: the type's shape; token ids are int64


def random_value(name: str, t: ast.TypeAst, seed: int) -> tuple[Tensor, np.ndarray, str]:
    """`x: T`: random numbers from the seed and the name, so the same line gives the same x in
    any session (token ids uniformly from the vocabulary)."""
    tensor = concrete_type(t)
    if 4 * math.prod(tensor.shape) > BYTES_LIMIT:
        raise DpError("resource", f"{tensor} needs {4 * math.prod(tensor.shape) / 2**30:.1f} "
                      f"GiB, more than the limit of {BYTES_LIMIT / 2**30:.0f} GiB", t.span)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if tensor.vocab is None:
        array = np.asarray(rng.standard_normal(tensor.shape, np.float32))
        return tensor, array, f", standard normal (seed {seed})"
    array = np.asarray(rng.integers(0, tensor.vocab, tensor.shape), np.int64)
    return tensor, array, f", random tokens (seed {seed})"


def is_example(e) -> bool:
    """`digits(split = test)[0]`, perhaps with a type: one example of a data source."""
    if isinstance(e, ast.Ascribe):
        e = e.expr
    return (isinstance(e, ast.Index) and isinstance(e.table, ast.Call)
            and e.table.func in SOURCES)


def example(e: ast.Index | ast.Ascribe) -> tuple[Tensor, np.ndarray, str]:
    """One example of a data set; `digits(split = test)[0] : R^(1, 8, 8)` lays its values out
    in another type of the same size, row-major, as a model's input would be."""
    want = concrete_type(e.type) if isinstance(e, ast.Ascribe) else None
    e = e.expr if isinstance(e, ast.Ascribe) else e
    source = check_source(e.table)
    if source.kind not in EXAMPLES:
        raise DpError("value", "a value can be one example of digits(...), "
                      f"npz(\"file.npz\") or csv(\"file.csv\"), not of {source.kind}(...)",
                      source.span)
    ds = dataset(source, ".")
    number = isinstance(e.index, ast.Number) and e.index.value.is_integer()
    i = int(e.index.value) if number else -1
    if not 0 <= i < len(ds):
        raise DpError("value", f"{ds.name} has {len(ds):,} examples, numbered 0 to "
                      f"{len(ds) - 1}", e.index.span)
    x = np.ascontiguousarray(ds.x[i], np.float32)
    t = Tensor(x.shape)
    if want is not None:
        if want.vocab is not None or math.prod(want.shape) != x.size:
            raise DpError("data", f"the examples of {ds.name} are {t}, {x.size} values, "
                          f"which cannot be laid out as {want}", e.span)
        t, x = want, x.reshape(want.shape)
    y = ds.y[i] if ds.y is not None and ds.y.ndim == 1 else None
    label = ("" if y is None else f", label {y}" if ds.y.dtype.kind in "iu"
             else f", target {y:.4g}")  # a real target, to 4 significant digits
    return t, x, f", example {i} of {ds.name}{label}"
