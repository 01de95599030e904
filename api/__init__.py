"""dp from Python: load a program, make a network of one of its modules, run it on NumPy
arrays, differentiate it, train it, and move its weights in and out by parameter path.

    import dp
    prog = dp.load("programs/digits_mlp.dp")      # parse and check (or dp.loads(text))
    net = prog.model("Digits", seed=0)            # or weights="digits_mlp.safetensors"
    scores = net(x)                               # batch axis first, NumPy in and out
    out, pullback = net.vjp(x)                    # dx, dparams = pullback(cotangent)
    loss, dparams = net.value_and_grad(x, y)      # the train block's loss by default
    net.load_weights("w.safetensors"); net.save("out.safetensors")

Every mistake is a `dp.Error`, printed as the `dp` command prints it. docs/python.md
describes the whole API. The names are loaded on first use, so that `import dp.dsl` (and
the `dp` command) does not pay for the interpreter.
"""

from __future__ import annotations

import importlib

__all__ = ["load", "loads", "Error", "Program", "Net"]

_WHERE = {"load": "program", "loads": "program", "Program": "program", "Net": "net",
          "Error": "errors"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'dp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
