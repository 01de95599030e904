"""The arrays a user passes to a network, checked against its signature before they reach a
plan: a wrong shape or dtype is an Error naming the signature, never a NumPy traceback from
inside a kernel."""

from __future__ import annotations

import numpy as np
from dp.dsl.blocks import SIGN_LOSSES
from dp.dsl.errors import DpError
from dp.interpreter.data.sources import sign_labels

from .errors import Error


def _error(kind: str, message: str, *notes: str) -> Error:
    return Error(DpError(kind, message, None, notes))


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def inputs(model, xs: tuple, at_least: int = 0) -> list[np.ndarray]:
    """The inputs of `model` as the plan takes them: batch axis first, token ids as int64
    within the vocabulary, real values in the model's dtype."""
    sig = f"{model.name}: {model.sig}"
    if len(xs) != len(model.arg_shapes):
        raise _error("arity", f"{sig} takes {len(model.arg_shapes)} input array(s), "
                              f"but {len(xs)} were given")
    out, batch = [], None
    for i, (x, shape, t) in enumerate(zip(xs, model.arg_shapes, model.sig.args, strict=True)):
        what = "the input" if len(xs) == 1 else f"input {i + 1}"
        x = np.asarray(x)
        if x.shape[1:] != shape or x.ndim != len(shape) + 1:
            notes = (("a single example needs the batch axis: x[None]",)
                     if x.shape == shape else ())
            raise _error("shape", f"{sig} takes {what} with shape {_shape(('batch',) + shape)},"
                                  f" but it has shape {_shape(x.shape)}", *notes)
        if batch is not None and len(x) != batch:
            raise _error("shape", f"{sig}: {what} has {len(x)} examples, input 1 has {batch}")
        batch = len(x)
        if t.vocab is not None:
            out.append(_token_ids(x, t.vocab, sig, what))
        elif x.dtype.kind in "fiub":
            out.append(np.ascontiguousarray(x, dtype=model.dtype))
        else:
            raise _error("type", f"{sig} takes real numbers as {what}, but it has dtype "
                                 f"{x.dtype}")
    if batch < at_least:
        raise _error("shape", f"{sig}: the batch is empty; gradients need at least one example")
    return out


def plain(model) -> tuple | None:
    """(dtype, shape, rank) of the one real-valued input of `model`, None if it has other
    inputs: an array of exactly that kind needs no conversion, only `fits`."""
    if len(model.arg_shapes) != 1 or model.sig.args[0].vocab is not None:
        return None
    return model.dtype, model.arg_shapes[0], len(model.arg_shapes[0]) + 1


def fits(plain: tuple | None, x) -> bool:
    """x is a non-empty C-contiguous array of the `plain` input's dtype and shape, which
    `inputs` would pass on unchanged (checked in a few attribute reads)."""
    return (plain is not None and type(x) is np.ndarray and x.dtype is plain[0]
            and x.ndim == plain[2] and x.shape[1:] == plain[1] and len(x) > 0
            and x.flags.c_contiguous)


def _token_ids(x: np.ndarray, vocab: int, sig: str, what: str) -> np.ndarray:
    if x.dtype.kind not in "iu":
        raise _error("type", f"{sig} takes token ids (integers) as {what}, but it has dtype "
                             f"{x.dtype}")
    bad = (x < 0) | (x >= vocab)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _error("data", f"{sig} takes token ids 0 to {vocab - 1} as {what}, but it holds "
                             f"{x[at]} at index {list(at)}")
    return np.ascontiguousarray(x, dtype=np.int64)


def targets(model, y, loss: str, batch: int) -> np.ndarray:
    """Targets for `loss`: class (or token) ids for cross_entropy, -1 where nothing is
    scored; values shaped like the outputs for squared_error."""
    sig = f"{model.name}: {model.sig}"
    y = np.asarray(y)
    if loss == "cross_entropy":
        shape, classes = (batch,) + model.out_shape[:-1], model.out_shape[-1]
        if y.shape != shape or y.dtype.kind not in "iu":
            raise _error("shape", f"{sig}: cross_entropy takes targets of class ids (integers) "
                                  f"with shape {_shape(shape)}, but they have shape "
                                  f"{_shape(y.shape)} and dtype {y.dtype}")
        bad = (y < -1) | (y >= classes)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise _error("data", f"{sig}: cross_entropy takes class ids 0 to {classes - 1} "
                                 f"(-1: not scored), but the targets hold {y[at]} at index "
                                 f"{list(at)}")
        return np.ascontiguousarray(y, dtype=np.int64)
    shape = (batch,) + model.out_shape
    if y.shape != shape or y.dtype.kind not in "fiu":
        what = "labels 0/1 or -1/1" if loss in SIGN_LOSSES else "real targets"
        raise _error("shape", f"{sig}: {loss} takes {what} with shape {_shape(shape)}, "
                              f"but they have shape {_shape(y.shape)} and dtype {y.dtype}")
    if loss in SIGN_LOSSES:  # two classes, as the plan takes them: 0 and 1
        return np.ascontiguousarray(sign_labels(y, loss))
    return np.ascontiguousarray(y, dtype=model.dtype)


def cotangent(model, g, out_shape: tuple) -> np.ndarray:
    g = np.asarray(g)
    if g.shape != out_shape or g.dtype.kind not in "fiu":
        raise _error("shape", f"{model.name}: {model.sig}: the cotangent must be real with the "
                              f"outputs' shape {_shape(out_shape)}, but it has shape "
                              f"{_shape(g.shape)} and dtype {g.dtype}")
    return np.ascontiguousarray(g, dtype=model.dtype)
