"""The gradient oracle: float64 central differences against a vector-Jacobian product.

Central differences themselves are the package's (`dp.interpreter.core.gradcheck`, which `dp
gradcheck` runs on whole models); this file holds what only the tests use.

`check_grads(fn, inputs, vjp)` projects the output on one random cotangent c (seeded), so the
function checked is the scalar L(inputs) = <c, fn(*inputs)>. Its gradient with respect to every
element of every differentiable input is estimated by central differences (eps = 1e-6) and
compared elementwise with `vjp(c, out, inputs)`; inputs with more than `max_elements` entries
are checked along `directions` random directions instead. This is PyTorch gradcheck's rule
(float64, elementwise atol/rtol) with autograd's random output projection.

`sample_inputs` draws the inputs of a primitive case and redraws any sample within 1e-3 of
one of the primitive's registered kinks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from dp.interpreter.core.gradcheck import central_difference
from dp.interpreter.core.primitives import Primitive, apply_backward, apply_forward

KINK_TOL = 1e-3

# Primitives with two implementations chosen by size (a Numba kernel for small arrays, a NumPy
# chain for large ones; see interpreter/primitives/reduce.py). Tests run them both ways.
TWO_PATH = ("softmax", "log_softmax", "logsumexp", "cross_entropy")
PATHS = ("kernel", "numpy")


def force_path(monkeypatch, path: str) -> None:
    """Make every TWO_PATH primitive take `path` whatever the array size."""
    from dp.interpreter.core.primitives import reduce
    monkeypatch.setattr(reduce, "KERNEL_MAX_SIZE", 1 << 62 if path == "kernel" else -1)


def plan_loss_and_vjp(plan, ex, *inputs) -> tuple[Callable, Callable, list[str]]:
    """A plan's first output as a function of its parameters (in path order), and its
    reverse-mode VJP through the executor, for check_grads."""
    names = list(plan.params)

    def loss(*ps):
        ex.bind(dict(zip(names, ps, strict=True)))
        return ex.outputs(ex.forward(*inputs))[0]

    def vjp(c, out, ps):
        ex.bind(dict(zip(names, ps, strict=True)))
        grads = ex.backward(ex.forward(*inputs), seed=np.asarray(c))
        return tuple(grads[plan.params[k].id] for k in names)

    return loss, vjp, names


def check_grads(fn: Callable[..., np.ndarray], inputs: Sequence[np.ndarray],
                vjp: Callable[[np.ndarray, np.ndarray, tuple], Sequence], *,
                wrt: Sequence[int] | None = None, eps: float = 1e-6, atol: float = 1e-5,
                rtol: float = 1e-3, seed: int = 0, max_elements: int = 200,
                directions: int = 20, name: str = "fn") -> None:
    """Assert that vjp(c, out, inputs)[i] is the gradient of <c, fn(*inputs)> for i in wrt."""
    inputs = tuple(np.asarray(x) for x in inputs)
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if x.dtype.kind == "f"]
    for i in wrt:
        assert inputs[i].dtype == np.float64, f"{name}: input {i} must be float64 for gradcheck"
    rng = np.random.default_rng(seed)
    out = np.asarray(fn(*inputs))
    c = rng.standard_normal(out.shape)
    grads = vjp(c, out, inputs)
    assert len(grads) == len(inputs), f"{name}: vjp returned {len(grads)} entries for " \
                                      f"{len(inputs)} inputs"

    for i in wrt:
        x = inputs[i]
        got = grads[i]
        assert got is not None, f"{name}: no gradient for input {i}"
        assert got.shape == x.shape, f"{name}: gradient {i} has shape {got.shape}, input {x.shape}"
        assert got.dtype == x.dtype, f"{name}: gradient {i} has dtype {got.dtype}, input {x.dtype}"
        moved = list(inputs)
        moved[i] = x.copy()  # central_difference moves it in place

        def loss() -> float:
            return float(np.sum(c * np.asarray(fn(*moved))))

        if x.size <= max_elements:
            basis = np.eye(x.size).reshape((x.size,) + x.shape)
            numeric = np.array([central_difference(loss, moved[i], k, eps)
                                for k in range(x.size)])
        else:
            basis = rng.standard_normal((directions,) + x.shape)
            numeric = np.array([central_difference(loss, moved[i], t, eps) for t in basis])
        analytic = np.array([np.sum(got * t) for t in basis])
        np.testing.assert_allclose(
            analytic, numeric, atol=atol, rtol=rtol,
            err_msg=f"{name}: gradient of input {i} (analytic vs central differences)")


def check_primitive(prim: Primitive, inputs: Sequence[np.ndarray], params: dict, **kw) -> None:
    """check_grads on one registered primitive, through its forward and backward rules."""
    diff = [i for i in range(len(inputs)) if i not in prim.integer_inputs]

    def fn(*xs):
        return apply_forward(prim, *xs, **params)[0]

    def vjp(c, out, xs):
        wants = tuple(i in diff for i in range(len(xs)))
        out, saved = apply_forward(prim, *xs, **params)
        return apply_backward(prim, c, out, tuple(xs), wants, saved, **params)

    check_grads(fn, inputs, vjp, wrt=diff, name=prim.name, **kw)


# ---------------------------------------------------------------------------------------------
# Inputs for primitive cases


@dataclass(frozen=True)
class Arg:
    """How to draw one operand: `uniform` in [-2, 2], `positive` in [0.1, 2], `nonzero` with
    |x| in [0.5, 2] (denominators), `int` class labels in [0, high), or `scored` labels in
    [-1, high) (-1: a position that is not scored)."""
    shape: tuple[int, ...]
    kind: str = "uniform"
    high: int = 0


def draw(arg: Arg, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    return np.asarray(_draw(arg, rng, dtype))


def _draw(arg: Arg, rng: np.random.Generator, dtype) -> np.ndarray:
    if arg.kind == "uniform":
        return rng.uniform(-2, 2, arg.shape).astype(dtype)
    if arg.kind == "positive":
        return rng.uniform(0.1, 2, arg.shape).astype(dtype)
    if arg.kind == "nonzero":
        return (rng.uniform(0.5, 2, arg.shape) * rng.choice([-1, 1], arg.shape)).astype(dtype)
    if arg.kind in ("int", "scored"):
        return rng.integers(-(arg.kind == "scored"), arg.high, arg.shape, dtype=np.int64)
    raise ValueError(f"unknown Arg kind {arg.kind!r}")


def sample_inputs(prim: Primitive, args: Sequence[Arg], params: dict, *, seed: int = 0,
                  dtype=np.float64, tol: float = KINK_TOL, max_tries: int = 1000) -> tuple:
    """Draw the operands (seeded), redrawing while any registered kink is within tol."""
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        inputs = tuple(draw(a, rng, dtype) for a in args)
        if not any(kink(inputs, params, tol) for kink in prim.kinks):
            return inputs
    raise AssertionError(f"{prim.name}: no kink-free sample in {max_tries} draws")


def numeric_grad(model, loss: str, x, y) -> np.ndarray:
    """Central differences (eps = 1e-6) of a whole model's `loss` with respect to every entry
    of its flat parameter buffer: the oracle for `Model.loss_and_grad` (float64 models)."""
    return np.array([central_difference(lambda: model.loss(loss, x, y), model.flat, i)
                     for i in range(model.flat.size)])
