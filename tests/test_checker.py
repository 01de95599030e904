"""Stages 1-2: valid programs parse and check, with the dimensions the checker infers."""

from __future__ import annotations

import pytest
from dp.dsl import DpError, ast, load_text, parse
from dp.dsl.check_graph import MAX_NESTING
from dp.dsl.dims import resolve
from dp.dsl.parser import MAX_DEPTH
from dp.dsl.signatures import expr_text
from dp.interpreter.commands.structure import describe_module
from dp.interpreter.core.lower import lower

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


# --- how modules use one another: no cycles, a bounded nesting --------------------------------
def _errors(text: str) -> list[tuple[str, str, int, int]]:
    with pytest.raises(DpError) as info:
        load_text(text, "t.dp")
    return [(e.kind, e.message, e.span.line, e.span.col)
            for e in getattr(info.value, "errors", [info.value])]


WRAP = "Wrap(; f: R^4 -> R^4): R^4 -> R^4\nWrap(x; f: R^4 -> R^4) = f(x)\n"


@pytest.mark.parametrize("text, message, line, col", [
    ("Net: R^4 -> R^4\nNet(x) = Net(x)\n", "Net uses itself: Net -> Net", 2, 10),
    ("Net: R^4 -> R^4\nNet(x) = relu(Net x)\n", "Net uses itself: Net -> Net", 2, 15),
    ("A: R^4 -> R^4\nA(x) = B(x)\nB: R^4 -> R^4\nB(x) = 2 * A(x)\n",
     "A uses itself: A -> B -> A", 4, 12),
    ("W: R^4 -> R^4\nW(x; f: R^4 -> R^4 = W) = f(x)\n",
     "W uses itself: W -> W (the default of 'f')", 2, 6),
    (WRAP + "Net: R^4 -> R^4\nNet(x) = Wrap(x; f = Net)\n",
     "Net uses itself: Net -> Net (passed to Wrap as 'f')", 4, 10),
    (WRAP + "Net: R^4 -> R^4\nNet(x) = Wrap(x; f = Wrap(; f = Net))\n",
     "Net uses itself: Net -> Net (passed to Wrap as 'f')", 4, 10),
    ("Net: (R^4)^3 -> (R^4)^3\nNet(xs) = map(B, xs)\nB: R^4 -> R^4\n"
     "B(x) = seq_mean(Net(S(x)))\nS: R^4 -> (R^4)^3\nS(x) =\n  param E: (R^4)^3 ~ glorot\n  E\n",
     "Net uses itself: Net -> B -> Net", 4, 17),
    ("Top: (R^4)^3 -> (R^4)^3\nTop(xs) = scan(Cell, xs)\nCell: (R^4, R^4) -> R^4\n"
     "Cell(h, x) = h + seq_last(Top(S(x)))\nS: R^4 -> (R^4)^3\nS(x) =\n"
     "  param E: (R^4)^3 ~ glorot\n  E\n", "Top uses itself: Top -> Cell -> Top", 4, 27),
    ("Top: R^4 -> R^4\nTop(x) = repeat(2, B, x)\nB: R^4 -> R^4\nB(x) = x + Top(x)\n",
     "Top uses itself: Top -> B -> Top", 4, 12),
])
def test_a_module_that_uses_itself_is_an_error_at_the_use_that_closes_the_cycle(
        text, message, line, col):
    assert _errors(text) == [("type", message, line, col)]


def _chain(levels: int, last: str = "relu(x)", link: str = "{}(x)") -> str:
    """M0 uses M1 ... uses M{levels - 1}: `levels` modules nested in one another."""
    out = [f"M{i}: R^4 -> R^4\nM{i}(x) = {link.format(f'M{i + 1}')}\n"
           for i in range(levels - 1)]
    return "".join(out) + f"M{levels - 1}: R^4 -> R^4\nM{levels - 1}(x) = {last}\n"


def test_modules_nest_at_most_the_limit_and_deeper_is_one_error_at_the_use_too_deep():
    assert MAX_NESTING == 200
    load_text(_chain(MAX_NESTING))
    for levels in (MAX_NESTING + 1, 3000):
        assert _errors(_chain(levels)) == [(
            "limit", "M200 is nested 201 modules deep here, more than the limit of 200: "
            "M0 -> M1 -> ... -> M199 -> M200", 2 * 199 + 2, 11)]


@pytest.mark.parametrize("link", ["{}(x)", "Wrap(x; f = {})", "repeat(1, {}, x)",
                                  "relu(relu(relu({}(x))))"])
def test_lowering_reaches_the_nesting_limit(link):
    """The frames lowering takes per level of modules (at most 8 measured, through a module
    argument) fit in the recursion limit the parser sets, at the deepest nesting allowed."""
    last = "relu(W x)\n  param W: R^(4, 4) ~ glorot"
    tprog = load_text(WRAP + _chain(MAX_NESTING, last, link))
    (path,) = lower(tprog, "M0", 2).specs  # one parameter, under every level's site
    sites = {"{}(x)": "m{}", "Wrap(x; f = {})": "wrap.f", "repeat(1, {}, x)": "m{}1"}
    site = sites.get(link, "m{}")
    assert path == ".".join(["M0"] + [site.format(i) for i in range(1, MAX_NESTING)] + ["W"])


def test_nesting_counts_the_expressions_around_each_use_too():
    """Lowering recurses through expressions as through modules: 33 modules, each used inside
    30 calls of relu, are 1 + 32 * 31 = 993 levels and lower; 34 are 1,024, too deep."""
    link = "relu(" * 30 + "{}(x)" + ")" * 30
    last = "relu(" * 900 + "W x" + ")" * 900 + "\n  param W: R^(4, 4) ~ glorot"
    (path,) = lower(load_text(_chain(33, last, link)), "M0", 2).specs
    assert path.count(".") == 33
    assert _errors(_chain(34, "relu(x)", link)) == [(
        "limit", f"M33 is nested 1024 levels deep here, more than the limit of {MAX_DEPTH}: "
        "M0 -> M1 -> ... -> M32 -> M33", 66, 160)]


# --- a module argument with no default ----------------------------------------------------------
def test_a_module_with_an_open_argument_checks_and_is_described_with_it():
    tprog = load_text(WRAP, "t.dp")
    lines = describe_module(tprog, tprog.defs["Wrap"])
    assert lines == ["Wrap: R^4 -> R^4", "  f = f: R^4 -> R^4",
                     "  module argument f: R^4 -> R^4, bound where Wrap is used"]
    with pytest.raises(DpError) as info:
        lower(tprog, "Wrap", 1)
    assert info.value.message == ("Wrap needs its configuration argument 'f' bound to train or "
                                  "run it: write a module that uses Wrap(...; f = ...)")


def test_a_module_with_an_open_argument_cannot_be_run_by_a_run_block():
    text = WRAP + "run:\n  print time(Wrap, random(n = 8))\n"
    assert _errors(text) == [(
        "arity", "Wrap needs its configuration argument 'f' bound to train or run it: "
        "write a module that uses Wrap(...; f = ...)", 4, 14)]


# --- messages show expressions as they are written --------------------------------------------
def test_an_initializer_that_is_not_a_name_or_call_is_shown_as_written():
    text = "P: R^8 -> R^8\nP(x) = x + b\n  param b: R^8 ~ y \"\"\n"
    assert _errors(text) == [("syntax", "an initializer is a name or a call, like glorot or "
                              "normal(0.02), but this is y \"\"", 3, 18)]


@pytest.mark.parametrize("src, text", [
    ("-(a + b) @ W x", "(-(a + b)) @ (W x)"),
    ("f(a, 1.5; k = g(x), m = 2)", "f(a, 1.5; k = g(x), m = 2)"),
    ("E[t] * (x : R^4)", "E[t] * (x : ...)"),
    ("f(" * 30 + "x" + ")" * 30, "f(f(f(f(f(f(f(...)))))))"),
    ("a + " * 40 + "a", "((((((... + ...) + a) + a) + a) + a) ..."),
])
def test_expressions_in_messages_are_source_text_never_the_tree(src, text):
    expr = parse(f"P: R -> R\nP(x) = {src}\n").items[1].body[-1].expr
    assert expr_text(expr) == text


def test_a_parameter_named_like_a_module_is_the_parameter():
    """A user's module named W must not turn the standard library's `W x` into a call."""
    tprog = load_text("W: R^4 -> R^4\nW(x) = relu(x)\nNet: R^4 -> R^2\n"
                      "Net(x) = FeedForward(W(x))\n")
    assert set(tprog.defs) >= {"W", "Net"}


# --- sizes are at least 1 ---------------------------------------------------------------------
@pytest.mark.parametrize("text, message, line, col", [
    ("Net: R^(4 - 4) -> R\nNet(x) = sum(x)\n", "a size must be at least 1, but this one is 0",
     1, 9),
    ("Net: R^(1, 2, 2) -> R\nNet(x) = sum(OverlapPool(x))\n",
     "OverlapPool cannot be used here: it would give R^(1, 0, 0), but every size must be at "
     "least 1", 2, 14),
    ("P: R^n -> R^(n - 3)\nP(x) = W x\n  param W: R^(n - 3, n) ~ glorot\n"
     "Net: R^2 -> R\nNet(x) = sum(P(x))\n",
     "P cannot be used here: it would give R^-1, but every size must be at least 1", 5, 14),
])
def test_a_size_of_zero_or_less_is_an_error_where_it_arises(text, message, line, col):
    assert _errors(text) == [("shape", message, line, col)]


@pytest.mark.parametrize("text, kind, message, where", [
    ("Half: R^4 -> R^2\nNet: R^4 -> R^2\nNet(x) = Half(x)\n", "name",
     "Half has a signature but no definition", (3, 10)),
    ("Step: (R^6, R^4) -> R^6\nStep(h, x) = LSTM(h, x)\n", "type",
     "LSTM carries c from one step to the next, so it runs along a sequence: scan(LSTM, xs)",
     (2, 14)),
])
def test_what_lowering_used_to_find_the_checker_finds(text, kind, message, where) -> None:
    """A call of a module with no definition, and a cell that carries values called outside
    a scan, are check errors (the program is never lowered)."""
    assert _errors(text) == [(kind, message, *where)]
