"""The memory a model's buffers take, counted before any is allocated, and what to tell the
user when they do not fit: the layer that holds the biggest buffer, in the user's program.

Sizes are Python integers, so a shape whose product passes 2^63 is counted as it is (NumPy
would wrap it or refuse it with its own message). The limit is the machine's, not the
language's: 8 GiB unless `--max-memory` says otherwise (`memory_limit`).
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import TYPE_CHECKING

from dp.dsl.errors import DpError, Span

if TYPE_CHECKING:  # `dp check` reads the limit without NumPy, which the plan needs
    from .plan import Plan, Var

BYTES_LIMIT = 8 * 2**30
max_bytes = BYTES_LIMIT  # the limit of the command being run
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@contextlib.contextmanager
def memory_limit(nbytes: int | None):
    """`--max-memory`: the limit while a command runs, then the default again."""
    global max_bytes
    max_bytes = BYTES_LIMIT if nbytes is None else nbytes
    try:
        yield
    finally:
        max_bytes = BYTES_LIMIT


def parse_size(text: str) -> int | None:
    """`3G`, `512MB`, `1.5GiB`, `1000000`: bytes (K, M, G, T are powers of 1024); None if it
    is not a size."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if m is None or float(m[1]) <= 0:
        return None
    return int(float(m[1]) * _UNITS[m[2].lower()])


def nbytes(v: Var) -> int:
    return math.prod(v.shape) * (8 if v.dtype == "int64" else 4)


def size_text(n: float) -> str:
    """A size for people: 512 B, 1.5 MiB, 37.3 GiB (binary units, as memory is counted)."""
    if n >= 2**70:
        return f"{n:.3g} bytes"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def layer_of(plan: Plan, var_id: int) -> tuple[str, Span] | None:
    """The call of the model's own body that a value or parameter was made in (its module
    and span: the user's line, even for a value made inside the standard library), or None
    for what the model's body makes itself."""
    outer = None
    for first, end, span, callee in plan.calls:
        if first <= var_id < end and (outer is None or end - first > outer[1] - outer[0]):
            outer = (first, end, span, callee)
    return None if outer is None else (outer[3], outer[2])


def over_limit(plan: Plan, model: str, model_span: Span | None, copies: int = 0):
    """None when every buffer of a pass of the plan fits the limit (the inputs, the
    parameters and `copies` more of their size, training's gradients and optimizer state,
    and every value computed); else (message, span, notes) of the error, at the layer that
    holds the biggest buffer."""
    inputs = [(nbytes(v), v, None) for v in plan.inputs]
    params = [(nbytes(v), v, path) for path, v in plan.params.items()]
    values = [(nbytes(e.out), e.out, e) for e in plan.eqns if e.prim != "reshape"]  # a view
    sizes = {kind: sum(b for b, _, _ in group)
             for kind, group in (("inputs", inputs), ("params", params), ("values", values))}
    total = sizes["inputs"] + (1 + copies) * sizes["params"] + sizes["values"]
    if total <= max_bytes:
        return None
    size, var, what = max(inputs + params + values, key=lambda b: b[0])
    layer = layer_of(plan, var.id)
    if what is None:
        name, span = f"the input {_shape(var.shape)}", model_span
    elif isinstance(what, str):  # (a REPL expression's model, `the expression`, not in it)
        path = what if model.isidentifier() else what.removeprefix(f"{model}.")
        name, span = f"the parameter {path}", plan.specs[what].span
    else:
        name, span = f"the value {_shape(var.shape)} of {what.prim}", what.span
    if layer is not None:
        name, span = f"{name} (in {layer[0]})", layer[1]
    count = math.prod(var.shape)
    numbers = (f"{count:,} numbers" if count < 2**63 else
               f"{count:.3g} numbers: more than 2^63, which no array can hold")
    parts = [f"inputs {size_text(sizes['inputs'])}", f"parameters {size_text(sizes['params'])}"]
    if copies:
        parts.append(f"their gradients and optimizer state {size_text(copies * sizes['params'])}")
    parts.append(f"values computed {size_text(sizes['values'])}")
    return (f"{model} needs ≥ {size_text(total)} of buffers, more than the limit of "
            f"{size_text(max_bytes)}: {name} alone is {size_text(size)} ({numbers})", span,
            (f"at batch {plan.inputs[0].shape[0]}: {', '.join(parts)}",
             "a smaller layer, batch or sequence needs less; on a machine with the memory, "
             "raise the limit with --max-memory SIZE (such as 32G)"))


def out_of_memory(err: MemoryError, what: str, var: Var | None, span: Span | None,
                  plan: Plan | None = None) -> DpError:
    """An allocation that failed while running, below the limit (the machine, or a ulimit,
    had less): `what` was being computed, `var` the value it makes. The bytes asked for are
    NumPy's (its MemoryError says its shape) or else the value's."""
    shape = getattr(err, "shape", None)
    if shape is not None:
        asked = f"{size_text(math.prod(shape) * err.dtype.itemsize)} ({_shape(shape)} {err.dtype})"
    elif var is not None:
        asked = f"{size_text(nbytes(var))} ({_shape(var.shape)} {var.dtype})"
    else:
        asked = "memory"
    layer = layer_of(plan, var.id) if plan is not None and var is not None else None
    if layer is not None:
        what, span = f"{what} in {layer[0]}", layer[1]
    return DpError("resource", f"out of memory computing {what}: {asked} could not be "
                   "allocated", span, (
                       f"the buffers counted before running fit the limit of "
                       f"{size_text(max_bytes)} (--max-memory), but the machine, or a limit "
                       "such as `ulimit -v`, has less to give; a smaller batch or layer needs "
                       "less",))


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
