"""A module ready to run: concrete sizes, parameters in a flat buffer, plans per batch size.

Lowering happens once per batch size (the last, partial batch of an epoch gets its own plan);
every step after that only executes. Training, `dp run`, the reports and the REPL all run a
module through this one class.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import SIGN_LOSSES
from dp.dsl.errors import Span
from dp.dsl.frames import model_signature

from .execute import Executable
from .lower import lower
from .memory import out_of_memory
from .params import allocate, count, initialize
from .plan import check_plan


class Model:
    def __init__(self, tprog: T.TProgram, name: str, span: Span | None = None,
                 dtype=np.float32):
        self.tprog, self.name, self.span, self.dtype = tprog, name, span, np.dtype(dtype)
        self.arg_shapes, self.out_shape, self.sig = model_signature(tprog, name, span)
        plan = lower(tprog, name, 1, span)
        self._spare = {1: plan}  # a forward plan lowered already, used by the first predict
        self.specs = plan.specs
        self.feedback = plan.previous is not None  # it reads its own earlier output tokens
        self.flat, self.params = self._allocate("the parameters")
        # buffers of the parameters' size a training step adds (its gradients, the
        # optimizer's state), for the memory pre-check of its plan (`reserve`)
        self.copies = 0
        self._plans: dict = {}
        self.vocab = None  # a text.Vocab, for a model of tokens trained on text
        self.initial: dict[str, np.ndarray] | None = None  # start here, not from the seed
        self.input_dtypes = [np.int64 if t.vocab is not None else self.dtype
                             for t in self.sig.args]
        self.input_dtype = self.input_dtypes[0]

    @property
    def num_params(self) -> int:
        return count(self.specs)

    @cached_property
    def _grad_buffers(self) -> tuple:
        """Allocated on the first use: a model that only runs forward needs no gradients."""
        return self._allocate("the parameters' gradients")

    def _allocate(self, what: str) -> tuple:
        try:
            return allocate(self.specs, self.dtype)
        except MemoryError as err:  # below the limit, but the machine has less
            raise out_of_memory(err, f"{what} of {self.name}", None, self.span) from None

    def reserve(self, batch: int, loss: str, copies: int) -> None:
        """Refuse a training step that cannot fit before anything is allocated for it: its
        plan is lowered now, and the memory pre-check counts `copies` more buffers of the
        parameters' size (the gradients and the optimizer's state)."""
        self.copies = copies
        self._executable(batch, loss)

    @property
    def grad_flat(self) -> np.ndarray:
        return self._grad_buffers[0]

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._grad_buffers[1]

    def init(self, seed: int, each_call: bool = False) -> None:
        """Parameters from the seed, in plan order, or the `initial` ones when they are set
        (`dp train --init-from`: training starts from given weights). With `each_call`, the
        parameters of each call the module makes start from the seed again, so that
        `Digits(x)` inside a larger module gets what a model of Digits alone would (the REPL's
        expressions)."""
        groups = _by_call(self.specs) if each_call else [self.specs]
        for group in groups:
            initialize(group, self.params, np.random.default_rng(seed))
        if self.initial is not None:
            self.load(self.initial)

    def load(self, tensors: dict[str, np.ndarray]) -> None:
        for path, view in self.params.items():
            np.copyto(view, tensors[path])

    def load_part(self, prefix: str, tensors: dict[str, np.ndarray]) -> bool:
        """The parameters under `prefix` from tensors named without it, when they are exactly
        those (same paths, same shapes); otherwise nothing changes and the answer is False."""
        mine = {p[len(prefix):]: p for p in self.specs if p.startswith(prefix)}
        if not mine or mine.keys() != tensors.keys() or any(
                self.params[p].shape != tensors[k].shape for k, p in mine.items()):
            return False
        for k, p in mine.items():
            np.copyto(self.params[p], tensors[k])
        return True

    def _executable(self, batch: int, loss: str | None, input_grads: bool = False
                    ) -> Executable:
        key = (batch, loss, input_grads)
        if key not in self._plans:
            plan = self._spare.pop(batch, None) if loss is None else None
            if plan is None:
                plan = lower(self.tprog, self.name, batch, self.span,
                             copies=self.copies if loss is not None else 0)
            if loss is not None:
                _add_loss(plan, loss, self.span)
            ex = Executable(plan, self.dtype, input_grads)
            ex.bind(self.params)
            self._plans[key] = ex
        return self._plans[key]

    def predict(self, *xs: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Outputs for every example of the inputs (forward only), in chunks to bound memory.
        A module that reads its own earlier output tokens writes them one at a time."""
        n = len(xs[0])
        if 0 < n <= chunk and not self.feedback:  # one pass: no slices, no joins
            ex = self._plans.get((n, None, False)) or self._executable(n, None)
            if len(xs) == 1:
                return ex.run(np.ascontiguousarray(xs[0], dtype=self.input_dtype))
            return ex.run(*[np.ascontiguousarray(x, dtype=dt)
                            for x, dt in zip(xs, self.input_dtypes, strict=True)])
        outs = []
        for start in range(0, len(xs[0]), chunk):
            batch = [np.ascontiguousarray(x[start:start + chunk], dtype=dt)
                     for x, dt in zip(xs, self.input_dtypes, strict=True)]
            ex = self._executable(len(batch[0]), None)
            outs.append(_greedy(ex, batch, self.out_shape) if self.feedback else
                        ex.outputs(ex.forward(*batch))[0])
        return np.concatenate(outs) if outs else np.zeros((0,) + self.out_shape, self.dtype)

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

    def loss_and_grad(self, loss: str, x: np.ndarray, y: np.ndarray,
                      key: tuple[int, int] | None = None) -> float:
        """Mean loss of the batch; the gradient lands in `self.grad_flat`. `key` = (seed,
        step) makes it a training step: dropout draws its masks from it (None: evaluation,
        dropout is the identity)."""
        ex = self._plans.get((len(x), loss, False)) or self._executable(len(x), loss)
        if ex.grad_into is None:
            ex.bind(self.params, self.grads)
        vals = ex.forward(*self._inputs(x, y), key=key)
        ex.backward_into(vals)
        return float(vals[ex.output_ids[0]])

    def vjp(self, *xs: np.ndarray, key: tuple[int, int] | None = None):
        """The outputs for a batch (one plan, no decoding), and a function that takes a
        cotangent of the outputs to the gradients of the inputs (None for token ids) and of
        every parameter, by path: any loss, or none, can be differentiated through it. With
        `key` = (seed, step), a training step's pass (dropout active)."""
        ex = self._executable(len(xs[0]), None, input_grads=True)
        vals = ex.forward(*xs, key=key)

        def pullback(cotangent: np.ndarray) -> tuple[list, dict[str, np.ndarray]]:
            grads = ex.backward(vals, np.asarray(cotangent, self.dtype))
            dxs = [None if grads[i] is None else np.array(grads[i], self.dtype)
                   for i in ex.input_ids]
            dparams = {path: np.zeros(v.shape, self.dtype) if grads[v.id] is None else
                       np.array(grads[v.id], self.dtype) for path, v in ex.plan.params.items()}
            return dxs, dparams

        return np.array(ex.outputs(vals)[0]), pullback


def _greedy(ex: Executable, inputs: list[np.ndarray], out_shape: tuple) -> np.ndarray:
    """A plan that reads its own earlier outputs (`previous`, its last input) writes them one
    at a time: the most likely token at position t becomes `previous` at t + 1. Returns the
    last scores."""
    prev = np.zeros((len(inputs[0]),) + tuple(out_shape[:-1]), np.int64)
    for t in range(prev.shape[1]):
        scores = ex.outputs(ex.forward(*inputs, prev))[0]
        if t + 1 < prev.shape[1]:
            prev[:, t + 1] = scores[:, t].argmax(axis=-1)
    return scores


def _by_call(specs: dict) -> list[dict]:
    """The parameters of each call a module makes (`Net.feedforward1.W` is feedforward1's)."""
    groups: dict[str, dict] = {}
    for path, spec in specs.items():
        groups.setdefault(path.split(".")[1], {})[path] = spec
    return list(groups.values())


def _add_loss(plan, loss: str, span) -> None:
    """Append the batch's mean loss to a forward plan; the target is an input (class ids for
    cross_entropy, labels 0/1 for logistic and hinge, values otherwise)."""
    out = plan.outputs[0]
    if loss == "cross_entropy":
        target = plan.new_var(out.shape[:-1], True, "int64")
    elif loss in SIGN_LOSSES:
        target = plan.new_var(out.shape, True, "int64")
    else:
        target = plan.new_var(out.shape, True)
    plan.inputs.append(target)
    scores, labels = out, target
    if loss == "cross_entropy" and len(out.shape) > 2:  # a token at every position
        rows = math.prod(out.shape[:-1])
        scores = plan.add("reshape", (out,), span, shape=(rows, out.shape[-1]))
        labels = plan.add("reshape", (target,), span, shape=(rows,))
    per_example = plan.add(loss, (scores, labels), span)
    if loss == "cross_entropy":  # the mean over the scored positions (label -1 is not)
        mean = plan.add("scored_mean", (per_example, labels), span, batched=False)
    else:
        mean = plan.add("batch_mean", (per_example,), span, batched=False)
    plan.outputs[:] = [mean, out]
    check_plan(plan)
