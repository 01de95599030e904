"""Stages 1-2: valid programs parse and check, with the dimensions the checker infers."""

from __future__ import annotations

import pytest

from dp.dsl import DpError, load_text, parse
from dp.dsl import ast
from dp.dsl.dims import resolve

# SequenceModel: (R^d)^n -> (R^d)^n and RNN: (R^h, R^d) -> R^h come from stdlib/sequences.dp
SEQUENCES = """
# two implementations of one abstract module
Shift: (R^d)^n -> (R^d)^n implements SequenceModel
Shift(xs) = xs + 1

Scale: SequenceModel
Scale(xs) = 2 * xs

# a module taking a module argument, typed by the abstract signature
Twice(f: SequenceModel): SequenceModel
Twice(xs) = f(f(xs))

Pipeline: (R^8)^5 -> (R^8)^5
Pipeline(xs) = Twice(Twice(xs; f = Shift); f = Scale)

Cell: (R^h, R^d) -> R^h implements RNN
Cell(h, x) = tanh(U h + V x + b)
  param U: R^(h, h) ~ glorot
  param V: R^(h, d) ~ glorot
  param b: R^h ~ zeros
"""


def test_feedforward_program_parses_to_the_expected_tree():
    prog = parse("Digits: R^64 -> R^10\nDigits(x) = FeedForward(x; act = tanh)\n")
    sig, d = prog.items
    assert sig == ast.Signature("Digits", (), ast.FnType(
        ast.PowType(ast.RealType(), (ast.DimNum(64),)),
        ast.PowType(ast.RealType(), (ast.DimNum(10),))), None)
    assert d.body == (ast.Result(ast.Call("FeedForward", (ast.Name("x"),),
                                          (ast.KwArg("act", ast.Name("tanh")),))),)
    assert (d.span.line, d.span.col) == (2, 1)


def test_types_read_like_the_lecture():
    tprog = load_text(SEQUENCES)
    assert str(tprog.abstracts["SequenceModel"]) == "(R^d)^n -> (R^d)^n"
    assert str(tprog.abstracts["RNN"]) == "(R^h, R^d) -> R^h"
    assert str(tprog.signatures["Cell"]) == "(R^h, R^d) -> R^h"
    text = "Pool: R^(c, h, w) -> R^(c, h / 2, w / 2)\nTok: Token[V]^n -> (R^(2 * d))^n\n"
    tprog = load_text(text)
    assert str(tprog.signatures["Pool"]) == "R^(c, h, w) -> R^(c, h / 2, w / 2)"
    assert str(tprog.signatures["Tok"]) == "Token[V]^n -> (R^(2 * d))^n"


def test_abstract_with_two_implementations_and_a_module_argument():
    tprog = load_text(SEQUENCES)
    assert tprog.defs["Shift"].implements == "SequenceModel"
    assert tprog.defs["Scale"].implements == "SequenceModel"
    assert tprog.defs["Cell"].implements == "RNN"
    twice = tprog.defs["Twice"]
    assert [c.name for c in twice.config] == ["f"] and twice.config[0].sig == "SequenceModel"


def test_output_dimension_is_inferred_from_the_expected_type():
    tprog = load_text("Digits: R^64 -> R^10\n"
                      "Digits(x) = FeedForward(FeedForward(x) : R^128; act = identity)\n")
    d = tprog.defs["Digits"]
    outer = d.result
    inner = outer.args[0]
    dims = {v.name: resolve(fv, d.subst) for v, fv in inner.dims}
    assert dims == {"n": 64, "m": 128}
    assert {v.name: resolve(fv, d.subst) for v, fv in outer.dims} == {"n": 128, "m": 10}


@pytest.mark.parametrize("body", [
    "  h: R^128 = FeedForward(x)\n  FeedForward(h)\n",          # a typed let
    "  h = FeedForward(x; m = 128)\n  FeedForward(h)\n",         # an explicit argument
    "  h = FeedForward(x)\n  W h\n  param W: R^(10, 128) ~ glorot\n",  # a later use
])
def test_every_way_to_fix_a_dimension(body):
    tprog = load_text("Digits: R^64 -> R^10\nDigits(x) =\n" + body)
    d = tprog.defs["Digits"]
    first = d.lets[0][1]
    assert {v.name: resolve(fv, d.subst) for v, fv in first.dims} == {"n": 64, "m": 128}


def test_generic_definition_checks_with_rigid_dimensions():
    tprog = load_text("Block: R^n -> R^n\n"
                      "Block(x) = x + FeedForward(FeedForward(x) : R^(2 * n))\n")
    d = tprog.defs["Block"]
    inner = d.result.args[1].args[0]
    assert str(resolve(dict(inner.dims)[next(iter(dict(inner.dims)))], d.subst)) == "n"


def test_each_call_site_is_its_own_instance():
    tprog = load_text("Digits: R^64 -> R^10\n"
                      "Digits(x) = FeedForward(FeedForward(x) : R^128; act = identity)\n")
    d = tprog.defs["Digits"]
    assert d.site_counts == {"feedforward": 2}
    assert (d.result.index, d.result.args[0].index) == (2, 1)


def test_a_checker_error_is_collected_for_every_item():
    text = "A: R^4 -> R^2\nA(x) = Nope(x)\nB: R^4 -> R^2\nB(x) = Nada(x)\n"
    with pytest.raises(DpError) as info:
        load_text(text)
    assert [e.message for e in info.value.errors] == ["unknown module 'Nope'",
                                                      "unknown module 'Nada'"]


def test_a_module_argument_must_fit_its_abstract_type():
    text = SEQUENCES + "Bad: (R^8)^5 -> (R^8)^5\nBad(xs) = Twice(xs; f = Cell)\n"
    with pytest.raises(DpError) as info:
        load_text(text)
    assert info.value.message.startswith("Twice needs a SequenceModel for 'f', but Cell is")
