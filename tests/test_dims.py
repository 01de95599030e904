"""The dimension solver: equations between sizes are solved whatever the order of their terms,
rigid names stay rigid, and what cannot be solved yet waits until it can."""

from __future__ import annotations

import pytest
from dp.dsl import DpError, load_text
from dp.dsl.dims import DimExpr, Mismatch, dim_from, fresh, resolve, unify


def _vars():
    """n and m as a callee's (flexible), k as the signature's own (rigid)."""
    return fresh("n"), fresh("m"), fresh("k", rigid=True)


def add(a, b):
    return dim_from("+", a, b)


def mul(a, b):
    return dim_from("*", a, b)


def div(a, b):
    return dim_from("/", a, b)


def both_orders(a, b, s=None):
    """The substitutions unify gives for a = b and for b = a (the same, or it is a bug)."""
    return unify(a, b, dict(s or {})), unify(b, a, dict(s or {}))


# --- unify ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["n + 1 = 1 + k", "2 * n = 2 * k", "n / 2 = k", "n * k = 2 * k",
                                  "2 * n + 1 = 2 * k + 1", "1 + n = k + 1"])
def test_a_linear_equation_is_solved_for_its_open_variable_in_either_order(case):
    n, _, k = _vars()
    sides = {
        "n + 1 = 1 + k": (add(n, 1), add(1, k), "k"),
        "2 * n = 2 * k": (mul(2, n), mul(2, k), "k"),
        "n / 2 = k": (div(n, 2), k, "2 * k"),
        "n * k = 2 * k": (mul(n, k), mul(2, k), "2"),
        "2 * n + 1 = 2 * k + 1": (add(mul(2, n), 1), add(mul(2, k), 1), "k"),
        "1 + n = k + 1": (add(1, n), add(k, 1), "k"),
    }
    a, b, want = sides[case]
    for s in both_orders(a, b):
        assert str(resolve(n, s)) == want
        assert k not in s  # rigid: never bound


@pytest.mark.parametrize("a, b, want", [
    (lambda n: add(mul(2, n), 1), 7, 3),
    (lambda n: dim_from("-", 10, n), 4, 6),
    (lambda n: div(mul(3, n), 2), 6, 4),
    (lambda n: add(n, 1), 1 + 1, 1),
])
def test_numbers_solve_to_whole_numbers(a, b, want):
    n, _, _ = _vars()
    for s in both_orders(a(n), b):
        assert resolve(n, s) == want


@pytest.mark.parametrize("a, b, reason", [
    (lambda n, k: add(n, 1), lambda n, k: add(n, 2), "n + 1 != n + 2"),
    (lambda n, k: mul(2, n), lambda n, k: 7, "n would be 7/2, which is not a whole number"),
    (lambda n, k: add(n, 3), lambda n, k: 2, "n would be -1, but sizes must be positive"),
    (lambda n, k: mul(2, n), lambda n, k: add(mul(2, k), 1),
     "n would be (2 * k + 1) / 2, which is never a whole number"),
    (lambda n, k: add(k, 1), lambda n, k: 3, "k + 1 != 3"),  # k is rigid: it stands for any size
    (lambda n, k: k, lambda n, k: add(k, 1), "k != k + 1"),
])
def test_true_conflicts_are_mismatches_in_either_order(a, b, reason):
    n, _, k = _vars()
    with pytest.raises(Mismatch) as first:
        unify(a(n, k), b(n, k), {}, [])
    with pytest.raises(Mismatch) as second:
        unify(b(n, k), a(n, k), {}, [])
    assert first.value.reason == reason
    if not first.value.plain:  # a plain one restates the sides, in the order given
        assert second.value.reason == reason


def test_a_rational_solution_is_an_exact_division():
    n, _, k = _vars()
    s = unify(mul(2, n), k, {})
    assert isinstance(resolve(n, s), DimExpr) and str(resolve(n, s)) == "k / 2"
    s = unify(add(mul(2, n), 1), k, {})
    assert str(resolve(n, s)) == "(k - 1) / 2"


def test_two_open_variables_wait_until_one_is_fixed():
    n, m, k = _vars()
    deferred: list = []
    s = unify(add(n, m), k, {}, deferred, origin="the first argument")
    assert s == {} and len(deferred) == 1 and deferred[0].origin == "the first argument"
    s = unify(m, 2, s, deferred)
    assert deferred == [] and str(resolve(n, s)) == "k - 2"
    # the other order needs no waiting
    n, m, k = _vars()
    deferred = []
    s = unify(m, 2, {}, deferred)
    s = unify(add(n, m), k, s, deferred)
    assert deferred == [] and str(resolve(n, s)) == "k - 2"


def test_a_waiting_constraint_that_fails_later_says_where_it_was_made():
    n, m, _ = _vars()
    deferred: list = []
    s = unify(add(n, m), 2, {}, deferred, origin="x")
    with pytest.raises(Mismatch) as err:
        unify(m, 3, s, deferred, origin="y")
    assert err.value.origin == "x"
    assert err.value.reason == "n would be -1, but sizes must be positive"
    assert resolve(m, err.value.subst) == 3  # what was known when it failed


def test_without_a_list_to_wait_in_an_unsolvable_equation_is_a_mismatch():
    n, m, k = _vars()
    with pytest.raises(Mismatch):
        unify(add(n, m), k, {})
    with pytest.raises(Mismatch):
        unify(dim_from("//", n, 2), 3, {})


def test_a_floor_division_waits_for_its_operand():
    n, _, _ = _vars()
    deferred: list = []
    s = unify(dim_from("//", n, 2), 3, {}, deferred)
    assert len(deferred) == 1
    with pytest.raises(Mismatch):
        unify(n, 8, s, deferred)  # 8 // 2 = 4, not 3
    s = unify(n, 7, s, deferred)
    assert deferred == [] and resolve(n, s) == 7


def test_resolve_simplifies_only_what_it_substituted_into():
    n, _, k = _vars()
    s = unify(n, dim_from("-", k, 1), {})
    assert str(resolve(add(n, 2), s)) == "k + 1"
    assert str(resolve(mul(2, add(n, 1)), s)) == "2 * k"
    assert str(resolve(add(1, k), s)) == "1 + k"  # as written: nothing substituted
    with pytest.raises(Mismatch, match="7 / 2 is not a whole number"):
        resolve(div(n, 2), {n: 7})


# --- whole programs ---------------------------------------------------------------------------
def _dims(tprog, definition: str) -> dict[str, str]:
    """The sizes the checker found for the call a definition gives, as text."""
    d = tprog.defs[definition]
    return _call_dims(d.result, d)


def _call_dims(call, d) -> dict[str, str]:
    return {v.name: str(resolve(fv, d.subst)) for v, fv in call.dims}


@pytest.mark.parametrize("callee, caller, dims", [
    ("A: R^(n + 1) -> R^d", "C: R^(1 + k) -> R^k", {"n": "k", "d": "k"}),
    ("A: R^n -> R^(2 * d)", "C: R^k -> R^(2 * k)", {"n": "k", "d": "k"}),
    ("A: R^(2 * n + 1) -> R^n", "C: R^7 -> R^3", {"n": "3"}),
    ("A: R^(n / 2) -> R^n", "C: R^k -> R^(2 * k)", {"n": "2 * k"}),
    ("A: R^(2 * n) -> R^n", "C: R^(2 * k) -> R^k", {"n": "k"}),
    ("A: R^(2 * n) -> R^n", "C: R^k -> R^(k / 2)", {"n": "k / 2"}),
    ("A: R^n -> R^(n - 1)", "C: R^(k + 1) -> R^k", {"n": "k + 1"}),
])
def test_a_callee_written_in_other_terms_checks(callee, caller, dims):
    tprog = load_text(f"{callee}\nA(x) = FeedForward(x)\n\n{caller}\nC(x) = A(x)\n")
    assert _dims(tprog, "C") == dims


def test_a_size_fixed_by_a_later_argument_solves_an_earlier_one():
    tprog = load_text("Join: (R^(n + m), R^m) -> R^n\nJoin(x, y) = FeedForward(x)\n\n"
                      "Net: (R^5, R^3) -> R^2\nNet(x, y) = Join(x, y)\n")
    assert _dims(tprog, "Net") == {"n": "2", "m": "3"}


def test_a_size_fixed_by_the_result_solves_an_argument():
    tprog = load_text("Join: R^(n + m) -> R^m\nJoin(x) = FeedForward(x)\n\n"
                      "Net: R^(k + 4) -> R^4\nNet(x) = Join(x)\n")
    assert _dims(tprog, "Net") == {"n": "k", "m": "4"}


def _error(text: str) -> DpError:
    with pytest.raises(DpError) as err:
        load_text(text, "prog.dp")
    return err.value.errors[0] if hasattr(err.value, "errors") else err.value


def test_a_conflict_points_at_the_argument_in_the_callers_terms():
    err = _error("Pair: (R^n, R^(n + 1)) -> R^n\nPair(x, y) = x\n\n"
                 "Net: (R^k, R^k) -> R^k\nNet(x, y) = Pair(x, y)\n")
    assert err.message == "Pair expects R^(k + 1) here, but y is R^k"
    assert (err.span.line, err.span.col, err.span.end_col) == (5, 21, 22)


def test_a_conflict_found_later_points_at_the_argument_it_came_from():
    err = _error("Join: (R^(n + m), R^m) -> R^n\nJoin(x, y) = FeedForward(x)\n\n"
                 "Net: (R^2, R^3) -> R^1\nNet(x, y) = Join(x, y)\n")
    assert err.message == "Join expects R^(n + 3) here, but x is R^2"
    assert (err.span.line, err.span.col) == (5, 18)
    assert err.notes[0] == "n would be -1, but sizes must be positive"


def test_a_generic_caller_of_an_even_size_leaves_the_division_to_its_sizes():
    tprog = load_text("Halve: R^(2 * n) -> R^n\nHalve(x) = FeedForward(x)\n\n"
                      "Net: R^k -> R\nNet(x) = sum(Halve(x))\n")
    d = tprog.defs["Net"]
    assert _call_dims(d.result.args[0], d) == {"n": "k / 2"}


def test_a_conflict_another_call_reveals_is_reported_at_its_own_call():
    err = _error("Split: R^(n + m) -> R^m\nSplit(x) = FeedForward(x)\n\n"
                 "Three: R^3 -> R^3\nThree(x) = x\n\n"
                 "Net: R^2 -> R^3\nNet(x) = Three(Split(x))\n")
    assert err.message == "Split expects R^(n + 3) here, but x is R^2"
    assert (err.span.line, err.span.col) == (8, 22)
    assert err.notes == ("n would be -1, but sizes must be positive",
                         "Split: R^(n + m) -> R^m is declared at prog.dp:1")
