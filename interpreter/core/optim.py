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
from dp.dsl.errors import DpError, Span

from .kernels import optim as K

# name -> {hyperparameter: default}; None marks a required one.
DEFAULTS: dict[str, dict[str, float | None]] = {
    "sgd": {"lr": None, "momentum": 0.0, "weight_decay": 0.0, "nesterov": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
}


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
               step: int) -> None:
        """One step in place on `params` and `state`; `step` counts from 1; grads are read."""
        h = self.hyper
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
    """Validate a program's `optimizer name(k = v, ...)` clause and fill in the defaults."""
    if name not in DEFAULTS:
        raise DpError("name", f"unknown optimizer '{name}'; known: {', '.join(sorted(DEFAULTS))}",
                      span)
    known = DEFAULTS[name]
    for k in args:
        if k not in known:
            raise DpError("name", f"{name} has no hyperparameter '{k}'; "
                                  f"it has {', '.join(sorted(known))}", span)
    if "lr" not in args and known["lr"] is None:
        raise DpError("value", f"{name} needs a learning rate, e.g. {name}(lr = 0.1)", span)
    hyper: dict[str, float] = {}
    for k, d in known.items():
        try:
            hyper[k] = float(args.get(k, d))
        except (TypeError, ValueError):
            raise DpError("type", f"{name} {k} must be a number, but it is {args[k]!r}",
                          span) from None

    def bad(k: str, rule: str):
        return DpError("value", f"{name} {k} must be {rule}, but it is {args.get(k, hyper[k])}",
                       span)

    for k, x in hyper.items():
        if not math.isfinite(x):
            raise bad(k, "finite")
    if hyper["lr"] <= 0:
        raise bad("lr", "positive")
    for k in ("momentum", "weight_decay", "eps"):
        if k in hyper and hyper[k] < 0:
            raise bad(k, "non-negative")
    for k in ("beta1", "beta2"):
        if k in hyper and not 0 <= hyper[k] < 1:
            raise bad(k, "in [0, 1)")
    if name == "sgd":
        if hyper["nesterov"] not in (0.0, 1.0):
            raise bad("nesterov", "0 or 1")
        if hyper["nesterov"] and hyper["momentum"] == 0:
            raise DpError("value", "sgd nesterov = 1 needs a positive momentum", span)
    return Optimizer(name, hyper)


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale the flat gradient in place so its global L2 norm is at most max_norm (torch's
    clip_grad_norm_: factor max_norm / (norm + 1e-6), applied only when below 1); return the
    norm before clipping. A non-finite norm raises DpError('numeric') and changes nothing."""
    norm = math.sqrt(K.sum_squares(grads))
    if not math.isfinite(norm):
        bad = np.flatnonzero(~np.isfinite(grads))
        where = f"; the first non-finite entry is at flat index {bad[0]}" if bad.size else ""
        raise DpError("numeric", f"the gradient norm is {norm}{where}; no update was made")
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        K.scale(grads, factor)
    return norm
