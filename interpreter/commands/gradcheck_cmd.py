"""`dp gradcheck FILE [MODULE]`: the model's gradients (autodiff) against central differences,
in float64, on random inputs; a table of the worst error per parameter and input, exit 1 when
one is beyond the tolerance (interpreter/core/gradcheck.py says how the error is measured).
`--set cell=LSTM` chooses a configuration argument of the train block's model first, as `dp
train --set` does (settings of training mean nothing here: they are refused, as `dp run` does)."""

from __future__ import annotations

import math

import numpy as np
from dp.dsl.choices import only_choices
from dp.dsl.errors import DpError, suggest
from dp.dsl.loader import load_programs
from dp.interpreter.core import gradcheck as G
from dp.interpreter.core.model import Model
from dp.interpreter.training.train import parse_sets


def gradcheck_cmd(args) -> int:
    _flags(args)
    sets = parse_sets(args.set)
    tprog, _ = load_programs([args.file], sets, settings=False)
    only_choices(sets, tprog, "gradcheck")
    name, span = _module(tprog, args.file, args.module)
    model = Model(  # a model: concrete sizes, every module argument bound
        tprog, name, span, dtype=np.float64)
    model.init(args.seed)
    G.jitter(model, args.seed)
    rows = G.check_model(model, tprog.defs[name].inputs, batch=args.batch, seed=args.seed,
                         eps=args.eps, tol=args.tol)
    chosen = " with " + ", ".join(f"{k} = {v}" for k, v in sets.items()) if sets else ""
    print(f"gradcheck {name}{chosen} in float64: batch {args.batch}, seed {args.seed}, "
          f"eps {args.eps:g} (central differences), tolerance {args.tol:g}")
    print(f"error = |autodiff - numeric| / max(|autodiff|, |numeric|, {G.FLOOR:g}), at most "
          f"{G.per_tensor(len(rows))} random entries of each tensor")
    print("\n".join(G.format_rows(rows)))
    bad = [r for r in rows if not r.error <= args.tol]
    if not bad:
        print(f"ok: {sum(r.checked for r in rows):,} entries of {len(rows)} tensors within "
              f"{args.tol:g}", flush=True)
        return 0
    first = max(bad, key=lambda r: r.error)
    spec = model.specs.get(first.name)
    others = [r.name for r in bad if r is not first]
    notes = (f"at {first.name}[{', '.join(map(str, first.where))}]: autodiff "
             f"{first.analytic:.9g}, central differences {first.numeric:.9g}",)
    if others:
        notes += (f"also beyond it: {', '.join(others)}",)
    raise DpError("gradient", f"the gradient of {first.name} differs from central differences: "
                  f"error {first.error:.1e}, beyond the tolerance {args.tol:g}",
                  spec.span if spec is not None else span, notes)


def _flags(args) -> None:
    for flag, value in (("--eps", args.eps), ("--tol", args.tol)):
        if not (math.isfinite(value) and value > 0):
            raise DpError("usage", f"{flag} must be a positive number, not {value:g}")
    if args.batch < 1:
        raise DpError("usage", f"--batch must be at least 1, not {args.batch}")


def _module(tprog, file: str, module: str | None):
    """The module to check and where to point at it: MODULE's definition, or the train
    block's model."""
    if module is not None:
        if module not in tprog.defs:
            raise DpError("name", f"no module '{module}' is defined in {file} or the standard "
                          "library", None, suggest(module, tprog.defs))
        return module, tprog.defs[module].span
    if tprog.train is None:
        raise DpError("usage", f"{file} has no train block: name the module to check",
                      None, (f"dp gradcheck {file} MODULE",))
    return tprog.train.model, tprog.train.model_span
