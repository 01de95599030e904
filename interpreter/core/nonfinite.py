"""Where a training step's first non-finite value was made, said in the program's words.

Training checks only the loss and the gradient's norm, which costs nothing. When one is not
finite, `diagnose` runs that step's batch again, once, one primitive at a time, forward and
then backward, on the plan lowered without fusion (each step is then a primitive the program
wrote, with its span), and names the first step whose result is not finite: its expression,
which of its inputs was bad and where. If that plan stays finite (a fused kernel rounds
otherwise), the fused plan training ran is searched the same way. A step inside the standard
library is reported at the user's call, with a note saying where inside (`Plan.calls`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dp.stdlib
import numpy as np
from dp.dsl.errors import DpError, Span, read_source, source_lines, where

from .lower import lower
from .model import Model, _add_loss
from .plan import Const, Eqn, Plan, Var
from .primitives import PRIMITIVES, apply_backward, apply_forward

_STDLIB = Path(dp.stdlib.__file__).resolve().parent
_OVERFLOW = ("its inputs were finite and the result overflowed",
             "its inputs were finite and a value inside it overflowed")


@dataclass(frozen=True)
class Finding:
    """The first non-finite value: `what` says which, at `span`, with `notes` explaining it."""

    what: str
    span: Span | None
    notes: tuple[str, ...]
    overflow: bool  # finite inputs, a result too large: a smaller learning rate may help


def diagnose(model: Model, loss: str, x: np.ndarray, y: np.ndarray, key, step: int,
             trouble: str) -> DpError | None:
    """The `error[numeric]` (exit code 3) of training step `step` on the batch (x, y), whose
    `trouble` was "the loss became nan at step 2", naming the first primitive whose result was
    not finite; None when this batch, run again step by step, stays finite."""
    inputs = model._inputs(x, y)  # the plan's inputs, as training gives them
    found = None
    for fused in (False, True):
        try:
            plan = lower(model.tprog, model.name, len(x), model.span, fused=fused)
            _add_loss(plan, loss, model.span)
            found = _Search(plan, model, inputs, key, step).run()
        except (DpError, MemoryError):  # the unfused plan may need more memory than there is
            continue
        if found is not None:
            break
    if found is None:
        return None
    hint = ("try a smaller learning rate; " if found.overflow and step > 1 else "")
    err = DpError("numeric", f"{trouble}: {found.what}", found.span,
                  found.notes + (f"training stopped before updating: {hint}the last good "
                                 f"checkpoint is unchanged",))
    err.exit_code = 3
    return err


class _Search:
    """One plan run forward, then backward, stopping at the first non-finite value."""

    def __init__(self, plan: Plan, model: Model, inputs: tuple, key, step: int):
        self.plan, self.model, self.inputs, self.key, self.step = plan, model, inputs, key, step
        self.paths = {v.id: path for path, v in plan.params.items()}
        self.made = {e.out.id: e for e in plan.eqns}
        self.vals: dict[int, np.ndarray] = {}
        self.saved: dict[int, object] = {}
        self.sources: dict[str, list[str]] = {}
        self.call: Span | None = None  # where the finding points

    def run(self) -> Finding | None:
        with np.errstate(all="ignore"):
            return self._params() or self._forward() or self._backward()

    def _params(self) -> Finding | None:
        for path, v in self.plan.params.items():
            value = self.model.params[path]
            self.vals[v.id] = value
            if not np.isfinite(value).all():
                spec = self.plan.specs[path]
                span, notes = self._place(v.id, spec.span)
                made = (f"the update of step {self.step - 1} made it" if self.step > 1 else
                        "it was so before the first step")
                return Finding(f"the parameter '{path}' is not finite", span,
                               (f"it has {_first_bad(value)}; {made}",) + notes, True)
        return None

    def _forward(self) -> Finding | None:
        for v, x in zip(self.plan.inputs, self.inputs, strict=True):
            self.vals[v.id] = x
        for e in self.plan.eqns:
            args = self._args(e)
            out, self.saved[e.out.id] = apply_forward(PRIMITIVES[e.prim], *args,
                                                      **self._params_of(e))
            self.vals[e.out.id] = out = np.asarray(out)
            if not _finite(out):
                span, notes = self._place(e.out.id, e.span)
                self.call = span  # an input made inside the same call is quoted from there
                why, overflow = self._why_forward(e, args, out)
                return Finding(f"{self._name(e)} here made the step's first non-finite value",
                               span, (why,) + notes, overflow)
        return None

    def _backward(self) -> Finding | None:
        needs = set(self.paths)
        wanted = []
        for e in self.plan.eqns:
            wants = tuple(isinstance(a, Var) and a.id in needs for a in e.inputs)
            if any(wants):
                needs.add(e.out.id)
                wanted.append((e, wants))
        loss = self.plan.outputs[0]
        grads = {loss.id: np.ones_like(self.vals[loss.id])}
        for e, wants in reversed(wanted):
            g = grads.get(e.out.id)
            if g is None:
                continue
            args = self._args(e)
            results = apply_backward(PRIMITIVES[e.prim], g, self.vals[e.out.id], tuple(args),
                                     wants, self.saved[e.out.id], **self._params_of(e))
            for k, gi in enumerate(results):
                if gi is None or not wants[k]:
                    continue
                i = e.inputs[k].id
                total = gi if i not in grads else grads[i] + gi
                if not _finite(total):
                    span, notes = self._place(e.out.id, e.span)
                    self.call = span
                    return Finding(
                        f"the backward pass of {self._name(e)} here made the step's first "
                        f"non-finite gradient", span,
                        (self._why_backward(e, k, args, g, gi, total),) + notes, False)
                grads[i] = total
        return None

    # ---- the values, and what went wrong in words ----------------------------------------

    def _args(self, e: Eqn) -> list:
        return [self.vals[a.id] if isinstance(a, Var) else np.asarray(a.value, self.model.dtype)
                for a in e.inputs]

    def _params_of(self, e: Eqn) -> dict:
        """The step's parameters; dropout's key as the executor gives it (a rank's own part
        of the key only to a batched value)."""
        params = dict(e.params)
        if PRIMITIVES[e.prim].keyed:
            key = self.key
            params["key"] = key if key is None or e.inputs[0].batched else key[:2]
        return params

    def _why_forward(self, e: Eqn, args: list, out: np.ndarray) -> tuple[str, bool]:
        """What went wrong, and whether it was an overflow of finite inputs."""
        bad = _index(out)
        names = [self._input(a) for a in e.inputs]
        if e.prim in ("log", "sqrt") and args[0].shape == out.shape:
            v = float(args[0][bad])
            if v < 0:
                return (f"{e.prim} of a negative value: its input, {names[0]}, has {v:.4g}"
                        f"{_at(bad, out)}", False)
            if v == 0 and e.prim == "log":
                return f"log of 0: its input, {names[0]}, has 0{_at(bad, out)}", False
        if e.prim == "div" and np.broadcast_to(args[1], out.shape)[bad] == 0:
            return f"a division by zero: the divisor, {names[1]}, has 0{_at(bad, out)}", False
        sizes = ", ".join(f"{n} reaches {_largest(a):.3g}" for n, a in zip(names, args)
                          if a.dtype.kind == "f" and a.ndim)
        result = float(out[bad])
        head = _OVERFLOW[0 if np.isinf(result) else 1]
        return f"{head}: {result}{_at(bad, out)}" + (f"; {sizes}" if sizes else ""), True

    def _why_backward(self, e: Eqn, k: int, args: list, g, gi, total) -> str:
        name = self._input(e.inputs[k])
        if gi is not total and _finite(gi):  # each part finite, their sum not
            bad = _index(total)
            return (f"the gradients of {name} from its several uses add up to "
                    f"{float(total[bad])}{_at(bad, total)}")
        bad = _index(gi)
        x = args[k]
        if e.prim in ("log", "sqrt") and x.shape == gi.shape:
            return (f"the gradient of {e.prim} is infinite at 0 and overflows near it: its "
                    f"input, {name}, is {float(x[bad]):.4g}{_at(bad, gi)}")
        return (f"the gradient reaching it is finite (up to {_largest(g):.3g}); that of its "
                f"input {name} is {float(gi[bad])}{_at(bad, gi)}")

    def _name(self, e: Eqn) -> str:
        if dict(e.params).get("relu"):  # linear or conv2d, fused with its relu (fuse.py)
            return f"{e.prim} with relu (fused)"
        return e.prim

    def _input(self, a) -> str:
        """An input of a step, as the program names it."""
        if isinstance(a, Const):
            return f"the constant {a.value:g}"
        if a.id in self.paths:
            return f"the parameter '{self.paths[a.id]}'"
        if a in self.plan.inputs:
            k = self.plan.inputs.index(a)
            if a == self.plan.previous:
                return "the previous tokens"
            if k == len(self.plan.inputs) - 1:  # the loss's target comes last
                return "the target"
            return "the model's input" + (f" {k + 1}" if k else "")
        e = self.made[a.id]
        span, _ = self._place(a.id, e.span)
        if span is not e.span and span == self.call:  # made inside the same call: its text
            span = e.span
        text = self._text(span)
        return f"`{text}`" if text else f"the result of {e.prim}"

    def _text(self, span: Span | None) -> str | None:
        """The source of a one-line span, if short enough to quote."""
        if span is None or span.end_line != span.line:
            return None
        if span.file not in self.sources:
            text = read_source(span.file)
            self.sources[span.file] = source_lines(text) if text is not None else []
        lines = self.sources[span.file]
        if not 1 <= span.line <= len(lines):
            return None
        text = lines[span.line - 1][span.col - 1:span.end_col - 1].strip()
        return text if 0 < len(text) <= 40 else None

    def _place(self, var: int, span: Span | None) -> tuple[Span | None, tuple[str, ...]]:
        """Where to point: the span itself in the user's files; inside the standard library,
        the innermost call made from the user's files, with a note saying where inside."""
        if span is None or not _in_stdlib(span):
            return span, ()
        for first, end, call, callee in reversed(self.plan.calls):  # the innermost first
            if first <= var < end and not _in_stdlib(call):
                text = self._text(span)
                return call, (f"inside {callee}, at {where(span)}"
                              + (f": `{text}`" if text else ""),)
        return span, ()


def _in_stdlib(span: Span) -> bool:
    return Path(span.file).resolve().parent == _STDLIB


def _finite(a) -> bool:
    a = np.asarray(a)
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())


def _index(a: np.ndarray) -> tuple[int, ...]:
    """The first position (in C order) of a non-finite value of a."""
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])


def _at(index: tuple[int, ...], a: np.ndarray) -> str:
    """` at [2, 1] of [4, 2]` (the batch first, when the value has it); nothing for a number."""
    return f" at [{', '.join(map(str, index))}] of {list(a.shape)}" if index else ""


def _first_bad(a: np.ndarray) -> str:
    bad = _index(a)
    return f"{float(a[bad])}{_at(bad, a)}"


def _largest(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


def check_parameters(model: Model, step: int, span: Span | None) -> None:
    """Before a checkpoint is written: an update that made a parameter non-finite (a finite
    gradient times a huge rate) is an `error[numeric]` (exit code 3), so that the last good
    checkpoint is never replaced by one that cannot be loaded."""
    flat = model.flat
    if not flat.size or np.isfinite(flat.min()) and np.isfinite(flat.max()):  # nan propagates
        return
    path, value = next((p, v) for p, v in model.params.items() if not np.isfinite(v).all())
    err = DpError("numeric", f"the update of step {step} made the parameter '{path}' not "
                  f"finite ({_first_bad(value)}); training stopped before saving", span,
                  ("try a smaller learning rate; the last good checkpoint is unchanged",))
    err.exit_code = 3
    raise err
