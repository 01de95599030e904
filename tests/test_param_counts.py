"""Parameter counts as formulas of a module's sizes (dsl/param_counts.py): exact formulas for
the standard modules, the formula at concrete sizes against the count of the Model, the
front end's parameter shapes against lowering's for every shipped program and every standard
module instance, its count of one example's numbers against the buffers lowering makes (so that
`dp check` can leave lowering, and NumPy, to the models near the memory limit), and where
`dp check` shows a formula."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl.loader import load, load_text
from dp.dsl.param_counts import concrete_counts, count_at, footprint, formula_text
from dp.interpreter.commands.structure import is_closed
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from test_adjoint import CASES

STDLIB = load([])

FORMULAS = {
    "FeedForward": "m * n + m",
    "Linear": "m * n + m",
    "Conv": "c * c2 * k * k + c2",
    "GroupConv": "c2 * k * k * (c / g) + c2",  # c / g: the checker makes sure g divides c
    "Conv1D": "d * e * k + e",
    "SimpleRNN": "d * h + h * h + h",
    "LSTM": "4 * d * h + 4 * h * h + 4 * h",
    "LayerNorm": "2 * d",
    "Attention": "4 * d * d + 4 * d",  # the last projection's heads * (d / heads) is d
    "TransformerBlock": "4 * d * d + 2 * d * ff + 9 * d + ff",
    "Transformer": "4 * d * d * layers + 2 * d * ff * layers + 9 * d * layers + d * n + "
                   "ff * layers + 2 * d",
    "AddNorm": "2 * d + parameters of f",
    "SequenceRNN": "parameters of cell",
    "LanguageModel": "V * d + V * e + V + parameters of body",  # e: the body's output width
    "MaxPool": "0",
    "AlexNet": "61100840",
}


@pytest.mark.parametrize("module", sorted(FORMULAS))
def test_formula_of_a_standard_module(module):
    assert formula_text(STDLIB, module) == FORMULAS[module]


# module, its sizes, and a model that uses it at those sizes (its only parameters)
AT_SIZES = [
    ("FeedForward", {"n": 5, "m": 3}, "Net: R^5 -> R^3\nNet(x) = FeedForward(x)"),
    ("TransformerBlock", {"d": 8, "ff": 6, "n": 3},
     "Net: (R^8)^3 -> (R^8)^3\nNet(xs) = TransformerBlock(xs; heads = 2, ff = 6)"),
    ("Transformer", {"d": 8, "ff": 6, "n": 3, "layers": 3},
     "Net: (R^8)^3 -> (R^8)^3\nNet(xs) = Transformer(xs; layers = 3, heads = 2, ff = 6)"),
    ("Conv", {"c": 2, "c2": 3, "k": 5},
     "Net: R^(2, 6, 6) -> R^(3, 6, 6)\nNet(x) = Conv(x; k = 5)"),
    ("GroupConv", {"c": 4, "c2": 6, "g": 2},  # k takes its default, 3
     "Net: R^(4, 5, 5) -> R^(6, 5, 5)\nNet(x) = GroupConv(x; g = 2)"),
    ("LSTM", {"d": 3, "h": 5}, "Net: (R^3)^4 -> (R^5)^4\nNet(xs) = scan(LSTM, xs)"),
    ("SimpleRNN", {"d": 3, "h": 4}, "Net: (R^4, R^3) -> R^4\nNet(h, x) = SimpleRNN(h, x)"),
]


@pytest.mark.parametrize("module, sizes, program", AT_SIZES, ids=[a[0] for a in AT_SIZES])
def test_the_formula_at_sizes_is_the_models_count(module, sizes, program):
    model = Model(load_text(program), "Net", dtype=np.float64)
    assert count_at(STDLIB, module, sizes) == model.num_params


def _closed(tprog, files) -> list[str]:
    return [n for n, d in tprog.defs.items() if Path(d.span.file).resolve() in files
            and is_closed(d)]


SHIPPED = sorted((ROOT / "programs").glob("*.dp")) + sorted((ROOT / "docs" / "tutorial").glob(
    "*.dp"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_front_end_shapes_are_lowerings_for_every_shipped_program(path):
    tprog = load([str(path)])
    names = _closed(tprog, {path.resolve()})
    for name in names:
        specs = lower(tprog, name, 1).specs
        shapes = concrete_counts(tprog, name)
        assert list(shapes.items()) == [(p, s.shape) for p, s in specs.items()], name
        _footprint_bounds_lowering(tprog, name)


def test_front_end_shapes_are_lowerings_for_every_standard_module_instance():
    stdlib = {p.resolve() for p in (ROOT / "stdlib").glob("*.dp")}
    assert _closed(STDLIB, stdlib) == ["identity", "AlexNet"]
    specs = lower(STDLIB, "AlexNet", 1).specs
    assert concrete_counts(STDLIB, "AlexNet") == {p: s.shape for p, s in specs.items()}
    _footprint_bounds_lowering(STDLIB, "AlexNet")
    for module, program in CASES.items():
        tprog = load_text(program)
        specs = lower(tprog, "Net", 1).specs
        shapes = concrete_counts(tprog, "Net")
        assert list(shapes.items()) == [(p, s.shape) for p, s in specs.items()], module
        _footprint_bounds_lowering(tprog, "Net")
        assert sum(math.prod(s) for s in shapes.values()) == Model(tprog, "Net").num_params


def _numbers(plan) -> int:
    """What memory.py counts, in numbers: the inputs, the parameters and every value."""
    return sum(math.prod(v.shape) for v in plan.inputs) + sum(
        math.prod(v.shape) for v in plan.params.values()) + sum(
        math.prod(e.out.shape) for e in plan.eqns if e.prim != "reshape")


def _footprint_bounds_lowering(tprog, name: str) -> None:
    """Never below lowering's count, fused or not (else `dp check` could pass a model `dp
    train` refuses), and not far above it (else it would lower every model)."""
    front = footprint(tprog, name)
    fused, unfused = (_numbers(lower(tprog, name, 1, fused=f)) for f in (True, False))
    assert max(fused, unfused) <= front <= 3 * min(fused, unfused), (name, front, fused, unfused)


@pytest.mark.parametrize("program", [
    "Net: (R^8)^20 -> R^3\nNet(xs) = FeedForward(seq_mean(map(FeedForward(; m = 16), xs)); m = 3)",
    "Net: (R^4)^12 -> (R^5)^12\nNet(xs) = scan(Cell, xs)\n\n"
    "Cell: (R^5, R^4) -> R^5\nCell(h, x) = tanh(Linear(h; m = 5) + Linear(x; m = 5))",
    "Net: R^6 -> R^6\nNet(x) = repeat(3, FeedForward(; m = 6), x)",
    "Net: R^6 -> R^6\nNet(x) = Square(x)\n\nSquare: R -> R\nSquare(v) = v * v + 1",
    "Net: (R^8)^16 -> (R^8)^16\nNet(xs) = Transformer(xs; layers = 2, heads = 2, ff = 16)",
])
def test_footprint_counts_maps_scans_repeats_and_functions_of_numbers(program):
    _footprint_bounds_lowering(load_text(program + "\n"), "Net")


def test_dp_check_counts_a_model_near_the_limit_exactly(write_program):
    """A model whose numbers come near the limit is lowered and its buffers counted (a small
    one is checked without NumPy: tests/test_startup.py)."""
    path = write_program("Net: R^64 -> R^10\nNet(x) = FeedForward(x; m = 10)\n")
    assert dp_here("check", path)[0] == 0
    code, out, err = dp_here("check", path, "--max-memory", "1K")
    assert (code, out) == (1, "")
    assert err.startswith("error[resource]: Net needs ≥ 2.83 KiB of buffers, more than the "
                          "limit of 1 KiB"), err


def test_dp_check_shows_the_formula_of_a_generic_module(write_program):
    path = write_program("Block: (R^d)^n -> (R^d)^n\n"
                         "Block(xs; ff = 64) = TransformerBlock(xs; heads = 2, ff = ff)\n\n"
                         "Twice(f: SequenceModel): SequenceModel\nTwice(xs) = f(f(xs))\n\n"
                         "Once(f: SequenceModel): SequenceModel\nOnce(xs) = f(xs)\n")
    code, out, err = dp_here("check", path)
    assert (code, err) == (0, "")
    assert "  parameters: 4 * d * d + 2 * d * ff + 9 * d + ff" in out.splitlines()
    assert "  parameters: 2 × parameters of f" in out.splitlines()
    assert out.count("parameters:") == 2  # Once has only the parameters of its argument
    code, out, err = dp_here("check", path, "--summary")
    assert (code, err) == (0, "")
    assert out.count("  parameters: 4 * d * d + 2 * d * ff + 9 * d + ff\n"
                     "  parameter counts need concrete sizes for d, n\n") == 1
