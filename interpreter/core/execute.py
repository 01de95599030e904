"""Stage 4: run a Plan forward on arrays, and backward (reverse mode) to parameter gradients.

The plan is compiled once into a list of (forward function, a getter of its input slots,
output slot, params); a step is then one Python loop over it. Values live in a list of slots;
parameters are views into one flat buffer, so the optimizer updates them all in one kernel
call. The backward pass walks the same list in reverse, calling each primitive's
vector-Jacobian product, only for values that depend on a parameter.

A parameter's gradient goes straight into its view of the flat gradient buffer
(`backward_into`): the first contribution is written there (a primitive whose backward takes
`into=`, such as linear, writes it there itself: its GEMM's output is the buffer), later ones
are added in place, so no gradient is copied after the pass. Primitives without `into=` are
called as before and their result is copied in.

A primitive that saves a residual for its backward (`Primitive.saves`: conv2d, maxpool2d) gets
one more slot, after the plan's values and constants, and its steps name that slot; every other
step has None there, so the common case costs one `is None` test per step.

`run` is inference's pass: no gradients, and its result is the caller's own array (copied
only when it could be an input, a parameter or a constant), so `predict` needs no join.

Fresh arrays every step are cheap only if freed memory stays in the process: glibc's default
hands blocks of a few hundred KB and up back to the kernel (mmap, heap trimming), and each step
then page-faults on every new array. `keep_freed_memory` raises those thresholds once (glibc
only; elsewhere it does nothing): on transformer_charlm 18,000 page faults per training step
drop to 350 and the step from 40 to 21 ms (one BLAS thread, a loaded machine).
"""

from __future__ import annotations

import ctypes
import inspect
import sys
from operator import itemgetter

import numpy as np

from . import quiet
from .kernels import load_now
from .memory import out_of_memory
from .plan import Const, Plan
from .primitives import PRIMITIVES

load_now()  # the kernels the primitives bound lazily, loaded here in one thread

# primitives whose result is always a new array (primitives/linalg.py), never a view of an
# input: `run` returns it uncopied
FRESH = ("linear", "matmul")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_kept = False


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks of up to 32 MB instead of unmapping them (once)."""
    global _kept
    if _kept or not sys.platform.startswith("linux"):
        return
    _kept = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def _none(vals: list) -> tuple:
    return ()


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns a's memory (a itself, or the base of the base ... of a view)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def takes_into(fn) -> bool:
    """Whether a backward rule writes gradients into given arrays (its keyword `into=`)."""
    return "into" in inspect.signature(fn).parameters


class Executable:
    def __init__(self, plan: Plan, dtype=np.float32, input_grads: bool = False):
        """With `input_grads`, the backward pass also reaches the plan's real-valued inputs
        (a vector-Jacobian product with respect to the inputs, not only the parameters)."""
        keep_freed_memory()
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.n = (plan.next_id + sum(isinstance(a, Const) for e in plan.eqns for a in e.inputs)
                  + sum(PRIMITIVES[e.prim].saves for e in plan.eqns))
        self.template: list = [None] * self.n
        slot = plan.next_id
        needs = [False] * self.n
        for v in plan.params.values():
            needs[v.id] = True
        for v in plan.inputs if input_grads else ():
            needs[v.id] = v.dtype != "int64"
        self.forward_steps: list[tuple] = []
        self._reverse: list[tuple] = []  # (step, input slots, wants, writes into) backward
        self.keyed: list[tuple] = []  # the parameters of the keyed steps (dropout), which
        # take the step's key: forward sets it in each; and whether the input is batched
        for e in plan.eqns:
            ins = []
            for a in e.inputs:
                if isinstance(a, Const):
                    self.template[slot] = np.asarray(a.value, dtype=self.dtype)
                    ins.append(slot)
                    slot += 1
                else:
                    ins.append(a.id)
            prim = PRIMITIVES[e.prim]
            params = dict(e.params)
            if prim.keyed:
                params["key"] = None
                self.keyed.append((params, getattr(e.inputs[0], "batched", False)))
            saved = None
            if prim.saves:
                saved, slot = slot, slot + 1
            # a tuple of the values when there are several (`many`), else the one value
            get, many = (itemgetter(*ins), len(ins) > 1) if ins else (_none, True)
            self.forward_steps.append((prim.forward, get, many, e.out.id, params, saved))
            wants = tuple(needs[i] for i in ins)
            if any(wants):
                needs[e.out.id] = True
                self._reverse.append(((prim.backward, get, many, e.out.id, params, wants,
                                       saved), tuple(ins), takes_into(prim.backward)))
        self._reverse.reverse()
        self.backward_steps = self._steps({})
        self.input_ids = [v.id for v in plan.inputs]
        self.output_ids = [v.id for v in plan.outputs]
        self.grad_into: dict[int, np.ndarray] | None = None
        self._into_steps: list[tuple] = []
        self._ones = None
        self._held: set[int] = set()  # the memory of the parameters and constants
        made = {e.out.id: e.prim for e in plan.eqns}  # an output of these is a new array
        self._fresh = made.get(self.output_ids[0]) in FRESH if self.output_ids else False

    def _steps(self, into: dict[int, np.ndarray]) -> list[tuple]:
        """The backward steps, each with the (input position, slot, destination array) of
        every gradient it gives; a destination is the `into` array of a parameter slot. The
        first step (walking backward) to reach a parameter gets its array as `into=` when its
        rule takes it."""
        steps, given = [], set()
        for (vjp, get, many, out, params, wants, saved), ins, writes in self._reverse:
            targets, dests = [], []
            for k, (i, w) in enumerate(zip(ins, wants, strict=True)):
                dest = into.get(i) if w else None
                first = dest is not None and i not in given
                dests.append(dest if first and writes else None)
                given.update((i,) if first else ())
                if w:
                    targets.append((k, i, dest))
            if any(d is not None for d in dests):
                params = {**params, "into": tuple(dests)}
            steps.append((vjp, get, many, out, params, wants, saved, tuple(targets)))
        return steps

    def bind(self, params: dict[str, np.ndarray],
             grads: dict[str, np.ndarray] | None = None) -> None:
        """Point the parameter slots at arrays (views into the flat buffer), and with `grads`
        the parameters' gradients of `backward_into` at theirs (views into the flat gradient
        buffer)."""
        for path, v in self.plan.params.items():
            self.template[v.id] = params[path]
        self._held = {id(_root(a)) for a in self.template if a is not None}
        if grads is not None:
            self.grad_into = {v.id: grads[path] for path, v in self.plan.params.items()}
            self._into_steps = self._steps(self.grad_into)

    def forward(self, *inputs: np.ndarray, key: tuple[int, int] | None = None) -> list:
        """The values of a pass; `key` = (seed, step) makes it a training step's (dropout
        draws its masks from it), None an evaluation (dropout is the identity)."""
        for params, batched in self.keyed:  # a rank's (seed, step, first) is for batches
            params["key"] = key if key is None or batched else key[:2]
        vals = self.template.copy()
        if len(inputs) != len(self.input_ids):
            raise ValueError(f"the plan takes {len(self.input_ids)} inputs, not {len(inputs)}")
        for i, x in zip(self.input_ids, inputs):
            vals[i] = x
        return self._pass(vals)

    def _pass(self, vals: list) -> list:
        # NumPy's warnings about inf and nan stay inside: a non-finite value is the caller's to
        # see (training names where it was made: nonfinite.py), never a warning on stderr
        token = quiet.enter()
        try:
            for fn, get, many, out, params, saved in self.forward_steps:
                if saved is None:
                    vals[out] = fn(*get(vals), **params) if many else fn(get(vals), **params)
                else:
                    vals[out], vals[saved] = (fn(*get(vals), **params) if many else
                                              fn(get(vals), **params))
        except MemoryError as err:  # below the limit, but the machine has less
            raise self._out_of_memory(err, out, "") from None
        finally:
            quiet.leave(token)
        return vals

    def _out_of_memory(self, err: MemoryError, out: int, what: str):
        """The error of a step (by its output's slot) whose allocation failed."""
        eqn = next(e for e in self.plan.eqns if e.out.id == out)
        return out_of_memory(err, what + eqn.prim, eqn.out, eqn.span, self.plan)

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output of an evaluation (dropout the identity) for inputs as the plan
        takes them, as an array of the caller's own: copied only when it is (a view of) an
        input, a parameter or a constant."""
        for params, _ in self.keyed:
            params["key"] = None
        vals = self.template.copy()
        for i, x in zip(self.input_ids, inputs, strict=True):
            vals[i] = x
        out = self._pass(vals)[self.output_ids[0]]
        if self._fresh:
            return out
        root = _root(out)
        mine = id(root) not in self._held
        for x in inputs:
            mine = mine and root is not _root(x)
        return out if mine else out.copy()

    def outputs(self, vals: list) -> list[np.ndarray]:
        return [vals[i] for i in self.output_ids]

    def backward(self, vals: list, seed: np.ndarray | None = None) -> list:
        """Gradients of the (first) output with respect to every slot that needs one (fresh
        arrays, or views of the seed)."""
        return self._backward(vals, seed, self.backward_steps)

    def backward_into(self, vals: list) -> None:
        """The gradient of the (first) output, a scalar, with respect to every parameter,
        written into the arrays `bind` gave (0 for a parameter it does not depend on)."""
        grads = self._backward(vals, None, self._into_steps)
        for i, dest in self.grad_into.items():
            if grads[i] is None:
                dest.fill(0)

    def _backward(self, vals: list, seed, steps: list) -> list:
        grads: list = [None] * self.n
        out = self.output_ids[0]
        if seed is None:
            seed = self._ones
            if seed is None or seed.shape != vals[out].shape or seed.dtype != vals[out].dtype:
                seed = self._ones = np.ones_like(vals[out])  # rules never write into g
        grads[out] = seed
        token = quiet.enter()  # as in _pass
        try:
            self._reverse_pass(vals, grads, steps)
        finally:
            quiet.leave(token)
        return grads

    def _reverse_pass(self, vals: list, grads: list, steps: list) -> None:
        for vjp, get, many, out, params, wants, saved, targets in steps:
            g = grads[out]
            if g is None:
                continue
            if saved is not None:
                params = {**params, "saved": vals[saved]}
            try:
                results = vjp(g, vals[out], get(vals) if many else (get(vals),), wants, **params)
            except MemoryError as err:  # below the limit, but the machine has less
                raise self._out_of_memory(err, out, "the gradient of ") from None
            for k, i, dest in targets:
                gi = results[k]
                if gi is None:
                    continue
                have = grads[i]
                if have is None:
                    if dest is not None and gi is not dest:
                        np.copyto(dest, gi)
                        gi = dest
                    grads[i] = gi
                elif dest is None:
                    grads[i] = have + gi
                else:  # the buffer is ours: accumulate in place
                    np.add(have, gi, out=have)
