"""Stage 4: run a Plan forward on arrays, and backward (reverse mode) to parameter gradients.

The plan is compiled once into a list of (forward function, input slots, output slot,
params); a step is then one Python loop over it. Values live in a list of slots; parameters
are views into one flat buffer, so the optimizer updates them all in one kernel call. The
backward pass walks the same list in reverse, calling each primitive's vector-Jacobian
product, only for values that depend on a parameter.

A primitive that saves a residual for its backward (`Primitive.saves`: conv2d, maxpool2d) gets
one more slot, after the plan's values and constants, and a step whose last entry is that slot;
every other step has None there, so the common case costs one `is None` test per step.

Fresh arrays every step are cheap only if freed memory stays in the process: glibc's default
hands blocks of a few hundred KB and up back to the kernel (mmap, heap trimming), and each step
then page-faults on every new array. `keep_freed_memory` raises those thresholds once (glibc
only; elsewhere it does nothing): on transformer_charlm 18,000 page faults per training step
drop to 350 and the step from 40 to 21 ms (one BLAS thread, a loaded machine).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from .plan import Const, Plan
from .primitives import PRIMITIVES

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
        self.forward_steps, self.backward_steps = [], []
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
            self.forward_steps.append((prim.forward, tuple(ins), e.out.id, params, saved))
            wants = tuple(needs[i] for i in ins)
            if any(wants):
                needs[e.out.id] = True
                self.backward_steps.append((prim.backward, tuple(ins), e.out.id, params, wants,
                                            saved))
        self.backward_steps.reverse()
        self.input_ids = [v.id for v in plan.inputs]
        self.output_ids = [v.id for v in plan.outputs]

    def bind(self, params: dict[str, np.ndarray]) -> None:
        """Point the parameter slots at arrays (views into the flat buffer)."""
        for path, v in self.plan.params.items():
            self.template[v.id] = params[path]

    def forward(self, *inputs: np.ndarray, key: tuple[int, int] | None = None) -> list:
        """The values of a pass; `key` = (seed, step) makes it a training step's (dropout
        draws its masks from it), None an evaluation (dropout is the identity)."""
        for params, batched in self.keyed:  # a rank's (seed, step, first) is for batches
            params["key"] = key if key is None or batched else key[:2]
        vals = self.template.copy()
        for i, x in zip(self.input_ids, inputs, strict=True):
            vals[i] = x
        for fn, ins, out, params, saved in self.forward_steps:
            if saved is None:
                vals[out] = fn(*[vals[i] for i in ins], **params)
            else:
                vals[out], vals[saved] = fn(*[vals[i] for i in ins], **params)
        return vals

    def outputs(self, vals: list) -> list[np.ndarray]:
        return [vals[i] for i in self.output_ids]

    def backward(self, vals: list, seed: np.ndarray | None = None) -> list:
        """Gradients of the (first) output with respect to every slot that needs one."""
        grads: list = [None] * self.n
        out = self.output_ids[0]
        grads[out] = np.ones_like(vals[out]) if seed is None else seed
        for vjp, ins, out, params, wants, saved in self.backward_steps:
            g = grads[out]
            if g is None:
                continue
            if saved is None:
                results = vjp(g, vals[out], tuple(vals[i] for i in ins), wants, **params)
            else:
                results = vjp(g, vals[out], tuple(vals[i] for i in ins), wants,
                              saved=vals[saved], **params)
            for i, gi in zip(ins, results, strict=True):
                if gi is not None:
                    grads[i] = gi if grads[i] is None else grads[i] + gi
        return grads

    def param_grads(self, grads: list, into: dict[str, np.ndarray]) -> None:
        """Copy each parameter's gradient into its view of the flat gradient buffer."""
        for path, v in self.plan.params.items():
            g = grads[v.id]
            if g is None:
                into[path].fill(0)
            else:
                np.copyto(into[path], g)
