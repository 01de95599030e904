"""Optimizers over one flat parameter array, with torch.optim's exact semantics.

A model's parameters are views into one contiguous 1-D array, and the gradients likewise, so
an optimizer step is one kernel call over flat arrays (`kernels/optim.py`). The state is a dict
of named flat arrays, so a checkpoint saves it as tensors; the step count `t` is not part of
it: the trainer keeps it and passes it in, counting from 1.

With g the gradient, p the parameters and t the step (everything elementwise):

  sgd (torch.optim.SGD, dampening 0):
      g   = g + weight_decay * p
      buf = momentum * buf + g          (buf starts at 0, so the first step gives buf = g)
      p   = p - lr * (g + momentum * buf  if nesterov  else  buf)
      With momentum 0 there is no buffer and p = p - lr * g.

  adam (torch.optim.Adam; weight_decay is an L2 term added to the gradient):
      g = g + weight_decay * p
      m = beta1 * m + (1 - beta1) * g
      v = beta2 * v + (1 - beta2) * g^2
      p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

  adamw (torch.optim.AdamW; weight_decay is decoupled from the gradient):
      p = p * (1 - lr * weight_decay), then the adam update above without the L2 term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import optimizer_hyper
from dp.dsl.errors import DpError, Span

from .kernels import optim as K


@dataclass
class Optimizer:
    name: str
    hyper: dict[str, float]

    def init_state(self, n: int, dtype) -> dict[str, np.ndarray]:
        """Zeroed state for n parameters: {} (plain sgd), {"momentum"} or {"m", "v"}."""
        if self.name == "sgd":
            return {"momentum": np.zeros(n, dtype)} if self.hyper["momentum"] != 0 else {}
        return {"m": np.zeros(n, dtype), "v": np.zeros(n, dtype)}

    def update(self, params: np.ndarray, grads: np.ndarray, state: dict[str, np.ndarray],
               step: int, lr: float | None = None) -> None:
        """One step in place on `params` and `state`; `step` counts from 1; grads are read.
        `lr`: this step's learning rate (a schedule's, which AdamW's decay uses too, as with
        torch's schedulers), else the optimizer's own."""
        h = self.hyper if lr is None else {**self.hyper, "lr": lr}
        try:
            if self.name == "sgd":
                buf = state["momentum"] if h["momentum"] != 0 else params[:0]
                K.sgd_step(params, grads, buf, h["lr"], h["momentum"], h["weight_decay"],
                           h["nesterov"] != 0)
                return
            lr, b1, b2, wd = h["lr"], h["beta1"], h["beta2"], h["weight_decay"]
            step_size = lr / (1.0 - b1 ** step)
            bc2_sqrt = math.sqrt(1.0 - b2 ** step)
            l2, decay = (0.0, 1.0 - lr * wd) if self.name == "adamw" else (wd, 1.0)
            K.adam_step(params, grads, state["m"], state["v"], b1, b2, h["eps"],
                        step_size, bc2_sqrt, l2, decay)
        except Exception as e:  # a size, dtype or layout mismatch: a bug in the caller
            raise DpError("internal", f"{self.name} update failed: {e}") from e


def make_optimizer(name: str, args: dict[str, float], span: Span | None = None) -> Optimizer:
    """`name(args)` by the rules of dsl/blocks.py (the table of optimizers), defaults filled."""
    return Optimizer(name, optimizer_hyper(name, args, span))


def from_record(record: T.TOptimizer) -> Optimizer:
    """The optimizer a checked train block names (its hyperparameters are already whole)."""
    return Optimizer(record.name, dict(record.hyper))


def grad_norm(grads: np.ndarray) -> float:
    """The global L2 norm of a flat gradient, its squares summed in float64."""
    return math.sqrt(K.sum_squares(grads))


def clip_grad_norm(grads: np.ndarray, max_norm: float, norm: float | None = None) -> float:
    """Scale the flat gradient in place so its global L2 norm is at most max_norm (torch's
    clip_grad_norm_: factor max_norm / (norm + 1e-6), applied only when below 1); return the
    norm before clipping (`norm`, when the caller has it already). A non-finite norm raises
    DpError('numeric') and changes nothing. Where float32 rounding leaves the scaled norm a
    hair above the bound, it is scaled again, so the bound holds exactly."""
    norm = grad_norm(grads) if norm is None else norm
    if not math.isfinite(norm):
        bad = np.flatnonzero(~np.isfinite(grads))
        where = f"; the first non-finite entry is at flat index {bad[0]}" if bad.size else ""
        raise DpError("numeric", f"the gradient norm is {norm}{where}; no update was made")
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        K.scale(grads, factor)
        for _ in range(64):  # each pass lowers every normal float32 entry by 2 ulps or more
            if K.sum_squares(grads) <= max_norm * max_norm:
                break
            K.scale(grads, 1.0 - 2.0 ** -22)
    return norm
