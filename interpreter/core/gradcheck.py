"""Autodiff against central differences, in float64: the oracle of `dp gradcheck` and of the
tests' gradient checks (tests/gradcheck.py).

A model's output is projected on one random cotangent c (seeded), so the function checked is
the scalar L = <c, model(inputs)>. `Model.vjp` gives its gradient with respect to every
parameter and real-valued input; central differences estimate the same entries one at a time.
A large tensor is checked on a random subset of its entries. The error of an entry is
|autodiff - numeric| / max(|autodiff|, |numeric|, FLOOR): relative, and absolute below FLOOR,
where central differences in float64 are only good to about 1e-8. An entry beyond the
tolerance is measured again with eps / 10 (the step may have crossed a kink, a relu at 0 or
a tie of a max), and the smaller error counts.

Parameters initialized to constants (zero biases) put kinks exactly where the check looks: a
relu of a zero bias on a zero input sits on its kink. `jitter` moves every parameter by a
little noise first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = 1e-6
TOL = 1e-4
FLOOR = 1e-3
ENTRIES = 16  # entries checked per tensor at most (each costs two forward passes)
BUDGET = 320  # entries checked in all, at least MIN_ENTRIES per tensor
MIN_ENTRIES = 4
JITTER = 0.1


def central_difference(loss: Callable[[], float], x: np.ndarray, direction, eps: float = EPS
                       ) -> float:
    """(loss() at x + eps t minus loss() at x - eps t) / 2 eps, moving x in place and putting it
    back exactly. `direction` is an array t of x's shape, or an int: the flat index of one
    entry (t a unit vector)."""
    if isinstance(direction, (int, np.integer)):
        flat = x.reshape(-1)
        assert np.shares_memory(flat, x), "central_difference needs a contiguous array"
        keep = flat[direction]
        flat[direction] = keep + eps
        up = loss()
        flat[direction] = keep - eps
        down = loss()
        flat[direction] = keep
    else:
        keep = x.copy()
        x[...] = keep + eps * direction
        up = loss()
        x[...] = keep - eps * direction
        down = loss()
        x[...] = keep
    return (up - down) / (2 * eps)


def errors(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """The error of each entry: relative, absolute below FLOOR."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), FLOOR)
    return np.abs(analytic - numeric) / scale


@dataclass(frozen=True)
class Row:
    """One tensor's result: a parameter (by path) or an input (`input x`)."""

    name: str
    checked: int  # entries compared
    size: int  # entries in the tensor
    error: float  # the worst error among them
    where: tuple[int, ...]  # the index of the worst entry
    analytic: float  # autodiff and central differences there
    numeric: float


def model_inputs(model, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random inputs of the right kind for a batch: token ids for a token input, reals
    uniform in [-2, 2] otherwise; for a model that reads its own earlier tokens (`previous`),
    those too."""
    xs = []
    for t, shape in zip(model.sig.args, model.arg_shapes, strict=True):
        if t.vocab is not None:
            xs.append(rng.integers(0, t.vocab, (batch,) + tuple(shape), dtype=np.int64))
        else:
            xs.append(rng.uniform(-2, 2, (batch,) + tuple(shape)).astype(model.dtype))
    if model.feedback:
        out = model.out_shape
        xs.append(rng.integers(0, out[-1], (batch,) + tuple(out[:-1]), dtype=np.int64))
    return xs


def jitter(model, seed: int, scale: float = JITTER) -> None:
    """Move every parameter by noise uniform in [-scale, scale]: no bias stays at exactly 0."""
    rng = np.random.default_rng([seed, 1])
    model.flat += rng.uniform(-scale, scale, model.flat.shape).astype(model.dtype)


def per_tensor(tensors: int) -> int:
    """Entries checked per tensor: ENTRIES, fewer in a model of many tensors (BUDGET in all),
    never fewer than MIN_ENTRIES."""
    return max(MIN_ENTRIES, min(ENTRIES, BUDGET // max(tensors, 1)))


def check_model(model, input_names, *, batch: int = 2, seed: int = 0, eps: float = EPS,
                tol: float = TOL) -> list[Row]:
    """Every parameter's and every real input's gradient of a float64 model (initialized or
    loaded: its parameters are used as they are), evaluation mode (no dropout). `input_names`
    names the module's inputs (the previous tokens need none: they are ids)."""
    assert model.dtype == np.float64, "gradcheck needs a float64 model"
    rng = np.random.default_rng(seed)
    xs = model_inputs(model, batch, rng)
    out, pullback = model.vjp(*xs)
    c = rng.standard_normal(out.shape)
    dxs, dparams = pullback(c)

    def loss() -> float:
        return float(np.sum(c * model.vjp(*xs)[0]))

    tensors = [(path, view, dparams[path]) for path, view in model.params.items()]
    tensors += [(f"input {name}", x, dx) for name, x, dx in zip(input_names, xs, dxs)
                if dx is not None]
    entries = per_tensor(len(tensors))
    return [_check(name, x, grad, loss, rng, eps, tol, entries) for name, x, grad in tensors]


def _check(name: str, x: np.ndarray, grad: np.ndarray, loss, rng, eps: float, tol: float,
           entries: int) -> Row:
    picked = np.arange(x.size) if x.size <= entries else np.sort(
        rng.choice(x.size, entries, replace=False))
    analytic = np.asarray(grad).reshape(-1)[picked]
    numeric = np.array([central_difference(loss, x, int(i), eps) for i in picked])
    errs = errors(analytic, numeric)
    for k in np.flatnonzero(errs > tol):  # a kink the step crossed is smaller with eps / 10
        again = central_difference(loss, x, int(picked[k]), eps / 10)
        if errors(analytic[k], again) < errs[k]:
            numeric[k], errs[k] = again, errors(analytic[k], again)
    worst = int(np.argmax(errs)) if len(errs) else 0
    where = tuple(int(i) for i in np.unravel_index(picked[worst], x.shape)) if x.size else ()
    return Row(name, len(picked), x.size, float(errs[worst]) if len(errs) else 0.0, where,
               float(analytic[worst]) if len(errs) else 0.0,
               float(numeric[worst]) if len(errs) else 0.0)


def format_rows(rows: list[Row]) -> list[str]:
    """The table: each tensor, how many of its entries were checked, the worst error."""
    table = [("gradient of", "entries checked", "worst error")]
    for r in rows:
        checked = (f"all {r.size:,}" if r.checked == r.size else
                   f"{r.checked:,} of {r.size:,}")
        table.append((r.name, checked, f"{r.error:.1e}"))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return ["  " + f"{a:<{widths[0]}}   {b:>{widths[1]}}   {c:>{widths[2]}}".rstrip()
            for a, b, c in table]
