"""The kernels a definition may declare (`kernel rnn_scan`): what each computes, and whether a
checked definition is written as it computes (docs/language.md, "Kernels").

A declaration lets lowering run `scan(cell, xs)` as one fused kernel along the whole sequence
instead of unrolling the cell; the definition stays the specification, and tests/
test_sequences.py holds each kernel to it. Each name here is a registered primitive of the
interpreter (tests/test_sequences.py checks it; dsl does not import the interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import typed as T


@dataclass(frozen=True)
class ScanKernel:
    form: str  # the body the kernel computes, as docs/language.md shows it
    gates: tuple[str, ...]  # the activation of each gate, in the kernel's order


SCAN_KERNELS = {
    "rnn_scan": ScanKernel("act(U h + V x + b), params U, V, b", ("tanh",)),
    "lstm_scan": ScanKernel(
        "lets i, f, g, o = gate(h, x) each (a cell declaring rnn_scan), "
        "carry c = f * c + i * g, result o * tanh(c)", ("sigmoid", "sigmoid", "tanh", "sigmoid")),
}


def written_as(kernel: str, tdef: T.TDef) -> bool:
    """Whether the definition computes what the kernel does (its activations aside: those are
    configuration, and lowering compares them with the kernel's gates where the cell is bound)."""
    h, x = tdef.inputs
    if kernel == "rnn_scan":
        r = tdef.result
        return (not tdef.lets and not tdef.carries and isinstance(r, T.TCall)
                and isinstance(r.callee, (T.ConfigMod, T.BuiltinMod)) and len(r.args) == 1
                and _form(r.args[0]) == f"add(add(matmul(U,{h}),matmul(V,{x})),b)")
    lets = dict(tdef.lets)
    return (list(lets) == ["i", "f", "g", "o", "c"] and [n for n, _ in tdef.carries] == ["c"]
            and all(_form(lets[n]) == f"call({h},{x})" for n in "ifgo")
            and _form(lets["c"]) == "add(mul(f,c),mul(i,g))"
            and _form(tdef.result) == "mul(o,tanh(c))")


def _form(e: T.TExpr) -> str:
    """The expression as text with its names, calls to modules all written `call(...)`."""
    if isinstance(e, (T.TLocal, T.TParam)):
        return e.name
    if isinstance(e, T.TPrim) and not e.attrs:
        return f"{e.op}({','.join(_form(a) for a in e.args)})"
    if isinstance(e, T.TCall) and isinstance(e.callee, T.GlobalMod):
        return f"call({','.join(_form(a) for a in e.args)})"
    return "?"
