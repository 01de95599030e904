"""The dimension solver: equations between sizes are solved whatever the order of their terms,
rigid names stay rigid, and what cannot be solved yet waits until it can."""

from __future__ import annotations

import pytest
from dp.dsl import DpError, load_text
from dp.dsl.dims import DimExpr, Fixed, Mismatch, Why, dim_from, fresh, resolve, unify


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
    assert err.notes == ("Join's n would be -1, but sizes must be positive",
                         "2 is the size of x, from the type of Net at line 4 "
                         "(Net: (R^2, R^3) -> R^1)",
                         "Join's n + 3 is Join's first input size, declared at line 1 "
                         "(Join: (R^(n + m), R^m) -> R^n)",
                         "Join's m = 3, from the type of y at line 5")


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
    assert err.notes[0] == "Split's n would be -1, but sizes must be positive"
    assert "Split's m = 3, from its use as Three's input at line 8" in err.notes


# --- where sizes came from (provenance) ------------------------------------------------------
def test_a_binding_records_what_fixed_it_by_the_side_its_variable_is_on():
    """A variable of the expected side is fixed by the value, one of the value's side by what
    is expected of it (a later use, an expected type)."""
    n, m, _ = _vars()
    why = Why("the type of x", "its use as Small's input", "span")
    s = unify(64, n, {}, why=why)  # n is on the expected side
    assert s.fixed[n] == Fixed("the type of x", "span")
    s = unify(m, 32, s, why=why)  # m is on the value's side
    assert s.fixed[m] == Fixed("its use as Small's input", "span")
    assert (resolve(n, s), resolve(m, s)) == (64, 32)


def test_a_deferred_constraint_records_its_own_reason_not_the_one_that_woke_it():
    n, m, _ = _vars()
    deferred: list = []
    s = unify(add(n, m), 5, {}, deferred, why=Why("the type of x", "", "x"))
    s = unify(m, 3, s, deferred, why=Why("the type of y", "", "y"))
    assert (resolve(n, s), resolve(m, s)) == (2, 3)
    assert s.fixed[n].span == "x" and s.fixed[m].span == "y"


def test_a_callee_variable_is_named_with_its_callee_and_the_callers_namesake_too():
    err = _error("Pair: (R^n, R^(n + 1)) -> R^n\nPair(x, y) = x\n\n"
                 "Net: (R^n, R^n) -> R^n\nNet(x, y) = Pair(x, y)\n")
    assert err.message == "Pair expects R^(n + 1) here, but y is R^n"
    assert err.notes == (
        "Net's n is the size of y, from the type of Net at line 4 (Net: (R^n, R^n) -> R^n)",
        "Net's n + 1 is Pair's second input size, declared at line 1 "
        "(Pair: (R^n, R^(n + 1)) -> R^n)",
        "Pair's n = Net's n, from the type of x at line 5")


def test_a_size_fixed_by_a_size_argument_a_later_use_and_an_expected_type():
    err = _error("Net: R^8 -> R^4\nNet(x) = (FeedForward(Linear(x; m = 6)) : R^3)\n")
    assert err.message == "Net should give R^4 (its signature), but the expression is R^3"
    assert "FeedForward's m = 3, from the expected type at line 2" in err.notes
    err = _error("Wide: R^16 -> R\nWide(x) = sum(x)\n\nNet: R^8 -> R\n"
                 "Net(x) =\n  h = Linear(x)\n  y = Wide(h)\n  (h : R^4)\n")
    assert err.message == "the expected type is R^4, but h is R^16"
    assert err.notes == (
        "16 is the size of h, from Linear's result, declared at stdlib/attention.dp:5 "
        "(Linear: R^n -> R^m)",
        "Linear's m = 16, from its use as Wide's input at line 7")
    err = _error("Net: R^8 -> R^4\nNet(x; d = 6) = (Linear(x; m = d) : R^4)\n")
    assert "Linear's m = d, from the size argument m = d at line 2" in err.notes


def test_the_instance_pass_says_which_use_fixed_a_size():
    err = _error("Halve: R^n -> R^(n/2)\nHalve(x) = W x\n  param W: R^(n/2, n) ~ glorot\n\n"
                 "Twice: R^n -> R^n\nTwice(x) = V Halve(x)\n  param V: R^(n, n/2) ~ glorot\n\n"
                 "Net: R^5 -> R^5\nNet(x) = Twice(x)\n")
    assert err.message == "Twice cannot be used with these sizes: 5 / 2 is not a whole number"
    assert err.notes == ("Twice is used with n = 5 at prog.dp:10",
                         "Twice's n = 5, from the type of x at line 10")
