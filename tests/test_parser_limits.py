"""The parser copes with any input: deep and long expressions up to MAX_DEPTH levels go through
every stage (check, lowering, execution) with the right value, one level more is an
error[limit] at the place it is passed, and bad indentation is an error[syntax], never one of
lark's exceptions (the depth rules are in dsl/parser.py's docstring)."""

from __future__ import annotations

import random
import sys
from functools import lru_cache

import numpy as np
import pytest
from dp.dsl import ast
from dp.dsl.checker import check
from dp.dsl.errors import DpError
from dp.dsl.loader import stdlib_programs
from dp.dsl.parser import MAX_DEPTH, parse, parse_input
from dp.interpreter.core.model import Model

L = MAX_DEPTH
HEAD = "Net: R^4 -> R^4\nNet(x) = "  # the expression starts on line 2, column 10
COL = len("Net(x) = ") + 1


@lru_cache(maxsize=1)
def _stdlib():
    return stdlib_programs()


def _run(source: str, x: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Check with the standard library, lower and run module Net on x, in float64."""
    model = Model(check(_stdlib() + [parse(source, "deep.dp")]), "Net", dtype=np.float64)
    for path, value in (params or {}).items():
        model.params[path][...] = value
    return model.predict(x)


def _limit_error(source: str) -> DpError:
    with pytest.raises(DpError) as info:
        parse(source, "deep.dp")
    err = info.value
    assert err.kind == "limit", err
    return err


def _at(err: DpError, line: int, col: int, end_col: int | None = None) -> None:
    assert (err.span.line, err.span.col) == (line, col)
    if end_col is not None:
        assert err.span.end_col == end_col


X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 3.0, -0.5, 0.0]])


# --- at the limit: every stage works and computes the right value ---------------------------------
def test_a_sum_of_max_depth_terms_runs():
    assert np.allclose(_run(HEAD + " + ".join(["x"] * L) + "\n", X), L * X)


def test_a_difference_chain_runs():
    assert np.allclose(_run(HEAD + " - ".join(["x"] * L) + "\n", X), (2 - L) * X)


def test_a_product_chain_runs():
    y = _run(HEAD + " * ".join(["x"] * L) + "\n", X[:, :1] * 0 + 1.0005)
    assert np.allclose(y, 1.0005 ** L)


def test_nested_brackets_run():
    # x is one level, each bracket one more
    source = HEAD + "(" * (L - 1) + "x" + ")" * (L - 1) + "\n"
    assert np.allclose(_run(source, X), X)


def test_a_right_leaning_sum_in_brackets_runs():
    n = L // 2  # each term adds a link and a bracket
    source = HEAD + "x + (" * (n - 1) + "x" + ")" * (n - 1) + "\n"
    assert np.allclose(_run(source, X), n * X)


def test_unary_minus_chain_runs():
    assert np.allclose(_run(HEAD + "- " * (L - 1) + "x\n", X), -X)  # 999 minus signs


def test_nested_calls_run():
    source = HEAD + "relu(" * (L - 1) + "x" + ")" * (L - 1) + "\n"
    assert np.allclose(_run(source, X), np.maximum(X, 0))


def test_a_chain_of_applications_runs():
    source = ("Net: R^4 -> R^4\nNet(x) =\n  param W: R^(4, 4) ~ zeros\n  "
              + "W " * (L - 1) + "x\n")
    w = np.diag([1.0, -1.0, 1.0, 1.0])
    expected = X @ np.linalg.matrix_power(w, L - 1).T
    assert np.allclose(_run(source, X, {"Net.W": w}), expected)


def test_a_long_dimension_sum_in_a_type_runs():
    # the signature R^(1 + ... + 1) -> R^k: the function type and the power are two levels
    k = L - 2
    dims = " + ".join(["1"] * k)
    source = f"Net: R^({dims}) -> R^{k}\nNet(x) = 2 * x\n"
    x = np.arange(2.0 * k).reshape(2, k)
    assert np.allclose(_run(source, x), 2 * x)


def test_a_long_dimension_sum_in_an_ascription_runs():
    k = L - 3  # ascription, power, chain
    source = f"Net: R^{k} -> R^{k}\nNet(x) = (x : R^({' + '.join(['1'] * k)}))\n"
    x = np.ones((1, k))
    assert np.allclose(_run(source, x), x)


def test_the_recursion_limit_leaves_room_for_every_stage():
    assert sys.getrecursionlimit() >= 4 * MAX_DEPTH


# --- one level more: error[limit] where the limit is passed ---------------------------------------
def test_one_term_too_many():
    err = _limit_error(HEAD + " + ".join(["x"] * (L + 1)) + "\n")
    col = COL + 4 * L - 2  # the operator and term of the last link: `+ x`
    _at(err, 2, col, col + 3)
    assert err.message == f"expression nested deeper than {L} levels"
    assert "h = ..." in err.notes[1]


@pytest.mark.parametrize("op", ["-", "*", "/", "@"])
def test_one_link_too_many_in_every_chain(op):
    err = _limit_error(HEAD + f" {op} ".join(["x"] * (L + 1)) + "\n")
    _at(err, 2, COL + 4 * L - 2)


def test_one_bracket_too_many():
    # counted from the inside: the outermost bracket is the one too many
    err = _limit_error(HEAD + "(" * L + "x" + ")" * L + "\n")
    _at(err, 2, COL, COL + 1)


def test_two_brackets_too_many_points_at_the_second():
    err = _limit_error(HEAD + "(" * (L + 1) + "x" + ")" * (L + 1) + "\n")
    _at(err, 2, COL + 1)


def test_one_minus_too_many():
    err = _limit_error(HEAD + "- " * L + "x\n")
    _at(err, 2, COL, COL + 1)


def test_one_application_too_many():
    err = _limit_error(HEAD + "W " * L + "x\n")
    _at(err, 2, COL + 2 * L, COL + 2 * L + 1)  # the argument x


def test_one_call_too_many():
    err = _limit_error(HEAD + "relu(" * L + "x" + ")" * L + "\n")
    _at(err, 2, COL, COL + 4)  # the name of the outermost call


def test_one_index_too_many():
    err = _limit_error(HEAD + "E[" * L + "t" + "]" * L + "\n")
    _at(err, 2, COL + 2, COL + 2 + 3 * (L - 1) + 1)  # the outermost index: E[...t...]


def test_one_dimension_term_too_many():
    # a chain of L + 1 terms passes the limit at its last link, on the line it is on
    dims = " + ".join(["1"] * L)
    err = _limit_error(f"Net: R^(1\n  + {dims}) -> R^4\nNet(x) = x\n")
    _at(err, 2, 4 * L - 1, 4 * L + 2)
    assert err.message == f"type nested deeper than {L} levels"


def test_a_type_one_level_too_deep_points_at_the_function_type():
    dims = " + ".join(["1"] * (L - 1))  # the chain fits, the power and function type do not
    err = _limit_error(f"Net: R^({dims}) -> R^4\nNet(x) = x\n")
    _at(err, 1, 6)


def test_the_limit_holds_in_a_repl_input():
    with pytest.raises(DpError) as info:
        parse_input(" + ".join(["x"] * (L + 1)), "<repl>", 7, 3)
    assert info.value.kind == "limit"
    _at(info.value, 7, 3 + 4 * L - 2)


FAR = sys.getrecursionlimit() + 100  # deeper than any recursion could go


@pytest.mark.parametrize("source", [
    HEAD + " + ".join(["x"] * FAR) + "\n",
    HEAD + "(" * FAR + "x" + ")" * FAR + "\n",
    HEAD + "-" * FAR + "x\n",
    HEAD + "W " * FAR + "x\n",
    HEAD + "f(" * FAR + "x" + ")" * FAR + "\n",
    "Net: R^(" + "(" * FAR + "n" + ")" * FAR + ") -> R^4\n",
], ids=["sum", "brackets", "minus", "applications", "calls", "dimension"])
def test_far_too_deep_is_the_same_error(source):
    _limit_error(source)


def test_a_deep_syntax_error_is_a_syntax_error():
    with pytest.raises(DpError) as info:
        parse(HEAD + "(" * FAR + "x\n", "deep.dp")
    assert info.value.kind == "syntax"


# --- chains fold to the same left-leaning tree and spans as before --------------------------------
def test_chains_lean_left_with_spans_from_the_first_term():
    body = parse("Net(x) = a + b * c - d\n", "f.dp").items[0].body[0].expr
    assert body == ast.BinOp("-", ast.BinOp("+", ast.Name("a"), ast.BinOp(
        "*", ast.Name("b"), ast.Name("c"))), ast.Name("d"))
    assert (body.span.col, body.span.end_col) == (10, 23)
    assert (body.left.span.col, body.left.span.end_col) == (10, 19)
    assert (body.left.right.span.col, body.left.right.span.end_col) == (14, 19)


def test_a_bracketed_first_term_starts_the_span_at_its_bracket():
    body = parse("Net(x) = (a + b) * c\n", "f.dp").items[0].body[0].expr
    assert body.span.col == 10 and body.left.span.col == 11  # the bracket is not the sum's


def test_applications_lean_left():
    body = parse("Net(x) = W V x\n", "f.dp").items[0].body[0].expr
    assert body == ast.Apply(ast.Apply(ast.Name("W"), ast.Name("V")), ast.Name("x"))
    assert (body.func.span.col, body.func.span.end_col) == (10, 13)


def test_dimension_chains_lean_left():
    sig = parse("Net: R^(a - b // 2 + c) -> R\n", "f.dp").items[0].sig
    (dim,) = sig.arg.dims
    assert dim == ast.DimOp("+", ast.DimOp("-", ast.DimName("a"), ast.DimOp(
        "//", ast.DimName("b"), ast.DimNum(2))), ast.DimName("c"))


# --- indentation ----------------------------------------------------------------------------------
def _syntax(source: str) -> DpError:
    with pytest.raises(DpError) as info:
        parse(source, "f.dp")
    assert info.value.kind == "syntax"
    return info.value


def test_a_dedent_to_no_block():
    err = _syntax("Net: R^4 -> R^4\nNet(x) =\n    h = relu(x)\n  h\n")
    assert err.message == "this line is indented by 2 spaces, which matches no enclosing block"
    _at(err, 4, 1, 3)
    assert err.notes == ("the enclosing blocks are indented by 0 or 4 spaces; indent it like "
                         "one of them",)


def test_a_dedent_after_a_comment_line_points_at_the_code():
    err = _syntax("Net(x) =\n    h = relu(x)\n# a comment\n\n   h\n")
    _at(err, 5, 1, 4)


def test_a_dedent_in_a_train_block():
    err = _syntax("train Net on digits:\n    loss cross_entropy\n  batch 8\n")
    _at(err, 3, 1, 3)


def test_tabs_are_eight_spaces_and_said_so():
    err = _syntax("Net(x) =\n            h = relu(x)\n\t  h\n")
    assert err.message == ("this line is indented by 1 tab and 2 spaces (10 spaces), which "
                           "matches no enclosing block")
    assert err.notes == ("the enclosing blocks are indented by 0 or 12 spaces; indent it like "
                         "one of them", "a tab counts as 8 spaces: indent with spaces only")
    _at(err, 3, 1, 4)


def test_an_expected_arrow_is_named_when_nothing_else_is_expected():
    err = _syntax("Net: R^4\n")
    assert err.message == "unexpected end of line; expected '->'"


def test_a_tab_and_eight_spaces_are_the_same_block():
    program = parse("Net: R^4 -> R^4\nNet(x) =\n\th = relu(x)\n        h\n", "f.dp")
    assert len(program.items[1].body) == 2


def test_a_dedent_in_a_run_block_after_a_longer_line():
    err = _syntax("run:\n      print params(Net)\n   print 1\n")
    assert err.notes[0].startswith("the enclosing blocks are indented by 0 or 6 spaces")
    _at(err, 3, 1, 4)


def test_indentation_inside_brackets_is_free():
    program = parse("Net: R^4 -> R^4\nNet(x) = relu(x\n      + x\n   )\n", "f.dp")
    assert len(program.items) == 2


# --- only DpErrors come out, whatever the text ----------------------------------------------------
PIECES = ["Net", "(", ")", "x", " ", "  ", "\t", "\n", "\n  ", "\n    ", "\n\t", "=", ":", "->",
          "R^4", "^", "[", "]", "+", "-", "*", "//", "@", ",", ";", "~", "#", "\\\n", "\r\n",
          "param", "carry", "train", "run:", "print", "1", "2.5", '"s"', "Token[", "abstract",
          "implements", "\x0c", "é", "$"]


def test_random_texts_raise_only_dp_errors():
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        for attempt in (lambda: parse(text, "f.dp"), lambda: parse_input(text, "<repl>", 3, 4)):
            try:
                attempt()
            except DpError:
                pass
