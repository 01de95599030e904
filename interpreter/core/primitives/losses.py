"""Loss primitives: a loss per example ([B], or [B, T] for token sequences), then `batch_mean`.

`cross_entropy` is one fused, stable Numba kernel each way (`kernels/losses.py`) for small
logits and a NumPy chain for large ones (the reasons are in `reduce.py`); its labels are
integer class indices and get no gradient. The label -1 marks a position that is not scored
(the unmasked characters of masked text): its loss and gradient are 0, and `scored_mean`
averages over the scored positions only. `squared_error` averages over the non-batch
axes (torch's MSELoss once `batch_mean` averages over the batch).
"""

from __future__ import annotations

import numpy as np

from ..kernels import losses as K
from . import register, same_shape
from .reduce import exp_shifted_rows, rows, shifted_rows, use_kernel

# ---------------------------------------------------------------------------------------------
# cross_entropy(logits [..., K], labels [...] integer) -> [...]


def cross_entropy_shape(logits: tuple, labels: tuple) -> tuple:
    if len(logits) < 2 or tuple(labels) != tuple(logits[:-1]):
        raise ValueError(f"cross_entropy: expects logits [B, ..., K] and labels [B, ...], got "
                         f"logits {list(logits)} and labels {list(labels)}")
    if logits[-1] == 0:
        raise ValueError(f"cross_entropy: no classes in logits {list(logits)}")
    return tuple(labels)


def _labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Labels as a flat int64 array, checked to lie in [-1, k): a bad label from a data file
    must be an error, never an out-of-bounds read in the kernel."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    flat = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
    # One reduction for both bounds: viewed as unsigned, a label below -1 is huge.
    if flat.size and (flat + 1).view(np.uint64).max() > k:
        from dp.dsl.errors import DpError
        bad = int(flat[(flat < -1) | (flat >= k)][0])
        raise DpError("data", f"label {bad} is out of range for {k} classes (expected 0..{k - 1})")
    return flat


def cross_entropy_forward(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = rows(logits)
    flat = _labels(labels, x.shape[1])
    if use_kernel(x):
        return K.cross_entropy_rows(x, flat).reshape(labels.shape)
    # NumPy path for large logits (see reduce.py): (m - x[label]) + log(sum exp(x - m)).
    z = shifted_rows(x)
    log_s = np.log(np.sum(np.exp(z), axis=1))
    loss = log_s - z[np.arange(len(flat)), flat]
    loss[flat < 0] = 0
    return loss.reshape(labels.shape)


def cross_entropy_backward(g, out, inputs, wants):
    if not wants[0]:
        return None, None
    logits, labels = inputs
    x = rows(logits)
    flat = _labels(labels, x.shape[1])
    g1 = np.ascontiguousarray(g).reshape(-1)
    if use_kernel(x):
        return K.cross_entropy_rows_vjp(g1, x, flat).reshape(logits.shape), None
    g1 = np.where(flat < 0, 0, g1)
    e = exp_shifted_rows(x)
    e *= (g1 / np.sum(e, axis=1))[:, None]
    e[np.arange(len(flat)), flat] -= g1  # an unscored row's -1 touches a zero row
    return e.reshape(logits.shape), None


register("cross_entropy", shape=cross_entropy_shape, forward=cross_entropy_forward,
         backward=cross_entropy_backward, smooth=True, integer_inputs=(1,))


# ---------------------------------------------------------------------------------------------
# scored_mean(losses [...], labels [...]) -> 0-d: the mean over the positions whose label is not
# -1 (cross-entropy's mean when only some positions are scored)


def scored_mean_shape(x: tuple, labels: tuple) -> tuple:
    if len(x) < 1 or tuple(x) != tuple(labels):
        raise ValueError(f"scored_mean: expects losses and labels of one shape with a batch "
                         f"axis, got {list(x)} and {list(labels)}")
    return ()


def _scored(labels: np.ndarray) -> int:
    return max(int(np.count_nonzero(labels >= 0)), 1)


def scored_mean_forward(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(x) / _scored(labels), dtype=x.dtype)


def scored_mean_backward(g, out, inputs, wants):
    if not wants[0]:
        return None, None
    x, labels = inputs
    return np.full(x.shape, g * (1.0 / _scored(labels)), dtype=x.dtype), None


register("scored_mean", shape=scored_mean_shape, forward=scored_mean_forward,
         backward=scored_mean_backward, smooth=True, integer_inputs=(1,))


# ---------------------------------------------------------------------------------------------
# squared_error(y, t) -> [B]: mean over the non-batch axes of (y - t)^2


def squared_error_shape(y: tuple, t: tuple) -> tuple:
    shape = same_shape("squared_error", y, t)
    if len(shape) < 1:
        raise ValueError("squared_error: needs a batch axis, got scalars")
    return shape[:1]


def _per_example(y: np.ndarray) -> int:
    return int(np.prod(y.shape[1:], dtype=np.int64))


def squared_error_forward(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    d = y - t
    return np.mean(d * d, axis=tuple(range(1, y.ndim))) if y.ndim > 1 else d * d


def squared_error_backward(g, out, inputs, wants):
    if not (wants[0] or wants[1]):
        return None, None
    y, t = inputs
    scale = 2.0 / max(_per_example(y), 1)
    dy = (y - t) * (g * scale).reshape((-1,) + (1,) * (y.ndim - 1))
    return (dy if wants[0] else None), (np.negative(dy) if wants[1] else None)


register("squared_error", shape=squared_error_shape, forward=squared_error_forward,
         backward=squared_error_backward, smooth=True)


# ---------------------------------------------------------------------------------------------
# batch_mean(x) -> 0-d: the mean of the per-example losses (over every axis, so [B, T] works)


def batch_mean_shape(x: tuple) -> tuple:
    if len(x) < 1:
        raise ValueError("batch_mean: needs a batch axis, got a scalar")
    return ()


def batch_mean_forward(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean(x))


def batch_mean_backward(g, out, inputs, wants):
    if not wants[0]:
        return (None,)
    x = inputs[0]
    return (np.full(x.shape, g * (1.0 / max(x.size, 1)), dtype=x.dtype),)


register("batch_mean", shape=batch_mean_shape, forward=batch_mean_forward,
         backward=batch_mean_backward, smooth=True)
