"""Loss primitives: a loss per example ([B], or [B, T] for token sequences), then `batch_mean`.

`cross_entropy` is one fused, stable Numba kernel each way (`kernels/losses.py`) for small
logits and a NumPy chain for large ones (the reasons are in `reduce.py`); its labels are
integer class indices and get no gradient. The label -1 marks a position that is not scored
(the unmasked characters of masked text): its loss and gradient are 0, and `scored_mean`
averages over the scored positions only. `squared_error` and `absolute_error` average over
the non-batch axes (torch's MSELoss and L1Loss once `batch_mean` averages over the batch).
`logistic` and `hinge` score two classes by the sign of a real score s: their labels are the
integers 0 and 1 (the data's -1 and +1 become 0 and 1 when it is read), standing for t = -1
and t = +1, and the loss is softplus(-t s) or max(0, 1 - t s).
"""

from __future__ import annotations

import numpy as np

from ..kernels import losses as K
from . import near_tie, register, same_shape
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


def _labels(labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Labels as a flat int64 array, one per row of `x` and checked to lie in [-1, k): a bad
    label from a data file must be an error, never an out-of-bounds read in the kernel."""
    k = x.shape[1]
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels must be integers, got dtype {labels.dtype}")
    flat = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
    if flat.size != x.shape[0]:  # the kernels read one label per row
        raise ValueError(f"cross_entropy: {flat.size} labels for {x.shape[0]} rows of logits")
    # One reduction for both bounds: viewed as unsigned, a label below -1 is huge.
    if flat.size and (flat + 1).view(np.uint64).max() > k:
        from dp.dsl.errors import DpError
        bad = int(flat[(flat < -1) | (flat >= k)][0])
        classes = f"{k} class{'' if k == 1 else 'es'}"
        raise DpError("data", f"label {bad} is out of range for {classes} (expected 0..{k - 1})")
    return flat


def cross_entropy_forward(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = rows(logits)
    flat = _labels(labels, x)
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
    flat = _labels(labels, x)
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
# Losses of one value per entry, [B, ...] -> [B]: the mean over the non-batch axes.


def _per_example_shape(name: str):
    def shape(y: tuple, t: tuple) -> tuple:
        both = same_shape(name, y, t)
        if len(both) < 1:
            raise ValueError(f"{name}: needs a batch axis, got scalars")
        return both[:1]
    return shape


def _mean_rest(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _spread(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's g divided among its entries, broadcastable to y's shape."""
    n = max(int(np.prod(y.shape[1:], dtype=np.int64)), 1)
    return (g * (1.0 / n)).reshape((-1,) + (1,) * (y.ndim - 1))


# squared_error(y, t): (y - t)^2, torch's MSELoss once batch_mean averages over the batch.
def squared_error_forward(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    d = y - t
    return _mean_rest(d * d)


def squared_error_backward(g, out, inputs, wants):
    if not (wants[0] or wants[1]):
        return None, None
    y, t = inputs
    dy = (y - t) * (2 * _spread(g, y))
    return (dy if wants[0] else None), (np.negative(dy) if wants[1] else None)


register("squared_error", shape=_per_example_shape("squared_error"),
         forward=squared_error_forward, backward=squared_error_backward, smooth=True)


# absolute_error(y, t): |y - t|, torch's L1Loss; its gradient sign(y - t) is 0 where y = t.
def absolute_error_forward(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return _mean_rest(np.abs(y - t))


def absolute_error_backward(g, out, inputs, wants):
    if not (wants[0] or wants[1]):
        return None, None
    y, t = inputs
    dy = np.sign(y - t) * _spread(g, y)
    return (dy if wants[0] else None), (np.negative(dy) if wants[1] else None)


register("absolute_error", shape=_per_example_shape("absolute_error"),
         forward=absolute_error_forward, backward=absolute_error_backward, smooth=False,
         kinks=(near_tie,))


# logistic(s, labels) and hinge(s, labels): two classes by the sign of the score s; the labels
# 0 and 1 stand for t = -1 and t = +1.
def _signs(name: str, labels: np.ndarray, dtype) -> np.ndarray:
    """t = -1 for label 0, +1 for label 1; any other label is a data error, never a silent
    class (the data readers turn -1/+1 into 0/1 and refuse the rest first)."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 1):
        from dp.dsl.errors import DpError
        bad = int(labels[(labels < 0) | (labels > 1)].flat[0])
        raise DpError("data", f"{name} takes the labels 0 and 1, but a label is {bad}")
    return (2 * labels - 1).astype(dtype)


def logistic_forward(s: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # log(1 + exp(-t s)) with logaddexp: no overflow for a large margin of either sign.
    return _mean_rest(np.logaddexp(0, -_signs("logistic", labels, s.dtype) * s))


def logistic_backward(g, out, inputs, wants):
    """d/ds = -t sigmoid(-t s), the sigmoid as exp(-log(1 + exp(t s))): stable both ways."""
    if not wants[0]:
        return None, None
    s, labels = inputs
    t = _signs("logistic", labels, s.dtype)
    return -t * np.exp(-np.logaddexp(0, t * s)) * _spread(g, s), None


register("logistic", shape=_per_example_shape("logistic"), forward=logistic_forward,
         backward=logistic_backward, smooth=True, integer_inputs=(1,))


def hinge_forward(s: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _mean_rest(np.maximum(1 - _signs("hinge", labels, s.dtype) * s, 0))


def hinge_backward(g, out, inputs, wants):
    """d/ds = -t where the margin t s is below 1, else 0 (0 at the bend t s = 1)."""
    if not wants[0]:
        return None, None
    s, labels = inputs
    t = _signs("hinge", labels, s.dtype)
    return np.where(t * s < 1, -t, 0).astype(s.dtype) * _spread(g, s), None


def _near_margin(inputs: tuple, params: dict, tol: float) -> bool:
    """Some margin t s is within tol of 1, where the hinge bends."""
    s, labels = inputs
    return bool(np.any(np.abs((2 * labels - 1) * s - 1) < tol))


register("hinge", shape=_per_example_shape("hinge"), forward=hinge_forward,
         backward=hinge_backward, smooth=False, kinks=(_near_margin,), integer_inputs=(1,))


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
