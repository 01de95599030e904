"""`dp check FILE --summary`: each module as a table of layers, like Keras' `model.summary()`.

One row per layer, the modules inside a layer indented under it, with its output for one
example and its parameter count (the front end's shapes, which tests hold equal to what
lowering allocates, so the total is what training allocates).
A generic module keeps its dimension names, and its count is a formula of them
(dsl/param_counts.py); numbers wait for sizes.
"""

from __future__ import annotations

from dp.dsl import typed as T
from dp.dsl.param_counts import formula_line

from .structure import Scope, count_under, layers, open_sizes, param_counts


def summary_lines(tprog: T.TProgram, tdef: T.TDef) -> list[str]:
    counts = param_counts(tprog, tdef)
    top = Scope.top(tdef)
    rows = [(p.name, "param", str(top.type(p.type)), f"{tdef.name}.{p.name}")
            for p in tdef.params]
    rows += [("  " * layer.depth + layer.name, layer.module, str(layer.type), layer.path)
             for layer in layers(tprog, top)]
    head = f"{tdef.name}: {tdef.sig}" + (f"  (implements {tdef.implements})"
                                         if tdef.implements else "")
    if counts is None:
        table = [("layer", "module", "output")] + [row[:3] for row in rows]
        if len(table) == 1:
            return [head, "  no layers and no parameters"]
        formula = formula_line(tprog, tdef.name)
        return [head] + _columns(table, "<<<") + ([f"  {formula}"] if formula else []) + [
            f"  parameter counts need concrete sizes for {', '.join(open_sizes(tdef))}"]
    table = [("layer", "module", "output", "parameters")]
    for name, module, shape, path in rows:
        n = counts[path] if path in counts else count_under(counts, path)
        table.append((name, module, shape, f"{n:,}"))
    table.append(("total", "", "", f"{sum(counts.values()):,}"))
    return [head] + _columns(table, "<<<>")


def _columns(table: list[tuple[str, ...]], align: str) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(align))]
    return ["  " + "   ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths))
            .rstrip() for row in table]
