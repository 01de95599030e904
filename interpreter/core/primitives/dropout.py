"""dropout(x; p, site): inverted dropout, the identity when the step has no key.

In training the executor hands the primitive the step's key, `key=(seed, step)`
(execute.Executable.forward); each entry of x is zeroed with probability p and the others
scaled by 1 / (1 - p), so the expected value is x. With `key=None` (evaluation: `dp run`, the
REPL, the reports, the held-out loss, export) it returns x itself. The mask is a function of
(seed, step, site, index) (kernels/dropout.py) and is saved for the backward, which multiplies
by it: for a fixed key the primitive is linear in x.
"""

from __future__ import annotations

import numpy as np

from ..kernels import dropout as K
from . import register


def dropout_shape(x: tuple, *, p: float, site: int, key=None) -> tuple:
    if not 0 <= p < 1:
        raise ValueError(f"dropout: needs 0 <= p < 1, got {p}")
    return tuple(x)


def dropout_mask(shape: tuple, dtype, p: float, site: int, key: tuple) -> np.ndarray:
    """The mask of the step `key` = (seed, step): 0 or 1 / (1 - p) for each entry. A data-
    parallel rank's key is (seed, step, first) for a batched x whose first example is example
    `first` of the whole batch: its mask is that slice of the whole batch's mask."""
    seed, step, first = key if len(key) == 3 else (*key, 0)
    m = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
    start = first * int(np.prod(shape[1:], dtype=np.int64)) if first else 0
    K.mask(seed, step, site, p, 1.0 / (1.0 - p), m, start)
    return m.reshape(shape)


def dropout_forward(x, *, p: float, site: int, key=None):
    if key is None or p == 0:
        return x, None
    m = dropout_mask(x.shape, x.dtype, p, site, key)
    return x * m, m


def dropout_backward(g, out, inputs, wants, *, saved, p: float, site: int, key=None):
    if not wants[0]:
        return (None,)
    return (g if saved is None else g * saved,)


register("dropout", shape=dropout_shape, forward=dropout_forward, backward=dropout_backward,
         smooth=True, saves=True, keyed=True)
