"""A module ready to run: concrete sizes, parameters in a flat buffer, plans per batch size.

Lowering happens once per batch size (the last, partial batch of an epoch gets its own plan);
every step after that only executes.
"""

from __future__ import annotations

import math

import numpy as np
from dp.dsl import typed as T
from dp.dsl.errors import Span

from .execute import Executable
from .lower import concrete_sig, lower
from .params import allocate, count, initialize


class Model:
    def __init__(self, tprog: T.TProgram, name: str, span: Span | None = None,
                 dtype=np.float32):
        self.tprog, self.name, self.span, self.dtype = tprog, name, span, np.dtype(dtype)
        self.arg_shapes, self.out_shape, self.sig = concrete_sig(tprog, name, span)
        plan = lower(tprog, name, 1, span)
        self.specs = plan.specs
        self.feedback = plan.previous is not None  # it reads its own earlier output tokens
        self.flat, self.params = allocate(self.specs, self.dtype)
        self.grad_flat, self.grads = allocate(self.specs, self.dtype)
        self._plans: dict = {}
        self.vocab = None  # a text.Vocab, for a model of tokens trained on text
        self.input_dtype = np.int64 if self.sig.args[0].vocab is not None else self.dtype

    @property
    def num_params(self) -> int:
        return count(self.specs)

    def init(self, seed: int) -> None:
        initialize(self.specs, self.params, np.random.default_rng(seed))

    def load(self, tensors: dict[str, np.ndarray]) -> None:
        for path, view in self.params.items():
            np.copyto(view, tensors[path])

    def _executable(self, batch: int, loss: str | None) -> Executable:
        key = (batch, loss)
        if key not in self._plans:
            plan = lower(self.tprog, self.name, batch, self.span)
            if loss is not None:
                _add_loss(plan, loss, self.span)
            ex = Executable(plan, self.dtype)
            ex.bind(self.params)
            self._plans[key] = ex
        return self._plans[key]

    def predict(self, x: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Outputs for every example of x (forward only), in chunks to bound memory."""
        outs = []
        for start in range(0, len(x), chunk):
            xb = np.ascontiguousarray(x[start:start + chunk], dtype=self.input_dtype)
            ex = self._executable(len(xb), None)
            outs.append(self._greedy(ex, xb) if self.feedback else
                        ex.outputs(ex.forward(xb))[0])
        return np.concatenate(outs) if outs else np.zeros((0,) + self.out_shape, self.dtype)

    def _greedy(self, ex: Executable, x: np.ndarray) -> np.ndarray:
        return greedy(ex, [x], self.out_shape)

    def _inputs(self, x: np.ndarray, y: np.ndarray) -> tuple:
        """The plan's inputs for a loss: with `previous`, the targets one later (teacher
        forcing), after the start token 0."""
        if not self.feedback:
            return x, y
        prev = np.zeros(y.shape, np.int64)
        prev[:, 1:] = np.maximum(y[:, :-1], 0)
        return x, prev, y

    def loss(self, loss: str, x: np.ndarray, y: np.ndarray) -> float:
        ex = self._executable(len(x), loss)
        return float(ex.outputs(ex.forward(*self._inputs(x, y)))[0])

    def loss_and_grad(self, loss: str, x: np.ndarray, y: np.ndarray) -> float:
        """Mean loss of the batch; the gradient lands in `self.grad_flat`."""
        ex = self._executable(len(x), loss)
        vals = ex.forward(*self._inputs(x, y))
        ex.param_grads(ex.backward(vals), self.grads)
        return float(vals[ex.output_ids[0]])


def greedy(ex: Executable, inputs: list[np.ndarray], out_shape: tuple) -> np.ndarray:
    """A plan that reads its own earlier outputs (`previous`, its last input) writes them one
    at a time: the most likely token at position t becomes `previous` at t + 1. Returns the
    last scores."""
    prev = np.zeros((len(inputs[0]),) + tuple(out_shape[:-1]), np.int64)
    for t in range(prev.shape[1]):
        scores = ex.outputs(ex.forward(*inputs, prev))[0]
        if t + 1 < prev.shape[1]:
            prev[:, t + 1] = scores[:, t].argmax(axis=-1)
    return scores


def _add_loss(plan, loss: str, span) -> None:
    """Append the batch's mean loss to a forward plan; the target is an input."""
    out = plan.outputs[0]
    if loss == "cross_entropy":
        target = plan.new_var(out.shape[:-1], True, "int64")
    else:
        target = plan.new_var(out.shape, True)
    plan.inputs.append(target)
    scores, labels = out, target
    if loss == "cross_entropy" and len(out.shape) > 2:  # a token at every position
        rows = math.prod(out.shape[:-1])
        scores = plan.add("reshape", (out,), (rows, out.shape[-1]), True, span,
                          shape=(rows, out.shape[-1]))
        labels = plan.add("reshape", (target,), (rows,), True, span, shape=(rows,))
    per_example = plan.add(loss, (scores, labels), scores.shape[:1], True, span)
    if loss == "cross_entropy":  # the mean over the scored positions (label -1 is not)
        mean = plan.add("scored_mean", (per_example, labels), (), False, span)
    else:
        mean = plan.add("batch_mean", (per_example,), (), False, span)
    plan.outputs[:] = [mean, out]
