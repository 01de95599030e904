"""The plan (interpreter/core/plan.py): shapes come from the primitives' own rules, a plan that
breaks its rules is caught where it is built, and heads and the causal mask are parameters of
primitives in it, not shapes or pseudo-ops for a later pass to find again."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dp.dsl import load_text
from dp.dsl.errors import DpError, Span
from dp.interpreter.core import plan as plan_module
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import Const, Eqn, Plan, PlanError, typecheck_plan
from dp.interpreter.core.primitives import get


def _plan_with_input(shape=(2, 3, 4)) -> tuple[Plan, object]:
    plan = Plan()
    x = plan.new_var(shape, True)
    plan.inputs.append(x)
    return plan, x


def test_the_tests_recheck_every_plan():
    assert plan_module.CHECK_PLANS


def test_shapes_and_batching_come_from_the_rules():
    plan, x = _plan_with_input()
    w = plan.params["W"] = plan.new_var((5, 4), False)
    y = plan.add("linear", (x, w))
    assert (y.shape, y.batched) == ((2, 3, 5), True)
    assert plan.add("transpose", (w,), axes=(1, 0)).batched is False
    zero = plan.add("fill", (Const(0.0),), batched=True, shape=(2, 5))
    assert (zero.shape, zero.batched) == ((2, 5), True)
    total = plan.add("sum", (y,), batched=False, axes=(0, 1, 2))
    assert (total.shape, total.batched) == ((), False)
    typecheck_plan(plan)


def test_a_rule_that_rejects_its_inputs_is_a_bug_named_with_its_place():
    span = Span("net.dp", 2, 9, 2, 14)
    plan, x = _plan_with_input()
    with pytest.raises(PlanError, match=r"lowering gave matmul inputs of shapes \[2, 3, 4\], "
                       r"\[2, 3, 4\] at net.dp:2:9: matmul: inner dimensions differ"):
        plan.add("matmul", (x, x), span)
    with pytest.raises(PlanError, match="'causal_mask', which is no primitive"):
        plan.add("causal_mask", (x,), span)
    assert not isinstance(PlanError("x"), DpError)  # error[internal], exit 4: not the user's


def test_typecheck_finds_a_use_before_definition_and_a_second_assignment():
    plan, x = _plan_with_input()
    y = plan.add("relu", (x,))
    z = plan.add("tanh", (y,))
    plan.eqns.reverse()
    with pytest.raises(PlanError, match=r"tanh at an unknown place uses v1 before it is defined"):
        typecheck_plan(plan)
    plan.eqns.reverse()
    plan.eqns.append(Eqn("relu", (x,), (), z, None))
    with pytest.raises(PlanError, match="relu at an unknown place assigns v2 a second time"):
        typecheck_plan(plan)


def test_typecheck_finds_a_wrong_shape_and_an_undefined_output():
    plan, x = _plan_with_input()
    wrong = plan.new_var((2, 3), True)
    plan.eqns.append(Eqn("relu", (x,), (), wrong, None))
    with pytest.raises(PlanError, match=r"the plan says \[2, 3\], the rule says \[2, 3, 4\]"):
        typecheck_plan(plan)
    plan.eqns.clear()
    plan.outputs.append(wrong)
    with pytest.raises(PlanError, match="the plan's output v1 is not defined"):
        typecheck_plan(plan)


PARAM_PLUS_BATCHED_SCALAR = """
Net: R^3 -> R^(2, 2)
Net(x) = P @ Q + sum(x)
  param P: R^(2, 4) ~ normal(1)
  param Q: R^(4, 2) ~ normal(1)
"""


def test_a_parameter_product_plus_a_batched_scalar_is_batched():
    """Lowering used to give the sum the batched scalar's shape [B, 1, 1]."""
    plan = lower(load_text(PARAM_PLUS_BATCHED_SCALAR), "Net", 5)
    typecheck_plan(plan)
    assert plan.outputs[0].shape == (5, 2, 2) and plan.outputs[0].batched
    model = Model(load_text(PARAM_PLUS_BATCHED_SCALAR), "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(0).normal(size=(5, 3))
    want = model.params["Net.P"] @ model.params["Net.Q"] + x.sum(axis=1)[:, None, None]
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)


def test_heads_are_a_parameter_of_split_heads_and_join_heads():
    source = """
Net: (R^8)^4 -> (R^8)^4
Net(xs) = join_heads(split_heads(xs; h = 2) * 2)
"""
    eqns = lower(load_text(source), "Net", 3).eqns
    assert [(e.prim, dict(e.params), e.out.shape) for e in eqns] == [
        ("split_heads", {"heads": 2}, (3, 2, 4, 4)), ("mul", {}, (3, 2, 4, 4)),
        ("join_heads", {"heads": 2}, (3, 4, 8))]
    model = Model(load_text(source), "Net", dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(3, 4, 8))
    np.testing.assert_allclose(model.predict(x), 2 * x, rtol=0, atol=1e-15)


def test_split_heads_is_the_reshape_and_transpose_it_replaces():
    x = np.random.default_rng(1).normal(size=(2, 5, 6))
    split = get("split_heads").forward(x, heads=3)
    np.testing.assert_array_equal(split, x.reshape(2, 5, 3, 2).transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(get("join_heads").forward(split, heads=3), x)
    with pytest.raises(ValueError, match=r"split_heads: 4 heads need \[..., n, d\] with d a "
                       r"multiple of them, got \[2, 5, 6\]"):
        get("split_heads").shape((2, 5, 6), heads=4)
    with pytest.raises(ValueError, match=r"join_heads: needs \[..., 2, n, e\] \(2 heads\), got "
                       r"\[2, 3, 5, 2\]"):
        get("join_heads").shape((2, 3, 5, 2), heads=2)


def _prims(source: str) -> Counter:
    return Counter(e.prim for e in lower(load_text(source), "Net", 2).eqns)


def test_causal_lowers_to_the_causal_softmax_primitive():
    written = _prims("""
Net: (R^4)^3 -> (R^4)^3
Net(xs) =
  w = softmax(causal(xs @ transpose(xs)))
  w @ xs + w @ xs
""")
    assert written["causal_softmax"] == 1 and "softmax" not in written
    as_argument = _prims("""
Net: (R^8)^4 -> (R^8)^4
Net(xs) =
  q = split_heads(xs; h = 2)
  a = Attention(xs, xs; heads = 2, mask = causal)
  a + join_heads(softmax(q @ transpose(q)) @ q)
""")
    assert as_argument["attention"] == 2 and "causal_softmax" not in as_argument


def test_a_causal_mask_that_feeds_no_softmax_is_an_error_at_the_mask():
    source = """
Net: (R^4)^3 -> (R^4)^3
Net(xs) =
  m = causal(xs @ transpose(xs))
  softmax(m) @ xs
"""
    with pytest.raises(DpError) as err:
        load_text(source)
    (err,) = err.value.errors
    assert err.kind == "type" and err.message == (
        "causal(...) masks scores for a softmax: write softmax(causal(scores))")
    assert (err.span.line, err.span.col) == (4, 7)


def test_dp_debug_rechecks_plans(monkeypatch, write_program):
    from conftest import dp_here

    monkeypatch.setattr(plan_module, "CHECK_PLANS", False)
    path = write_program("Net: R^4 -> R^3\nNet(x) = FeedForward(x; m = 3)\n")
    assert dp_here("check", path)[0] == 0 and not plan_module.CHECK_PLANS
    assert dp_here("check", "--debug", path)[0] == 0 and plan_module.CHECK_PLANS


def test_lowering_and_fusion_raise_no_user_error():
    """The checker is the only source of type and shape errors: lowering and fusion construct
    no DpError (the one left is the machine's memory limit, a resource, after lowering), and a
    decision of the checker's instance pass that lowering meets anyway is a PlanError."""
    import ast as pyast
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "interpreter" / "core"
    raised = {}
    for name in ("lower.py", "lower_ops.py", "fuse.py"):
        tree = pyast.parse((core / name).read_text())
        raised[name] = [n.lineno for n in pyast.walk(tree) if isinstance(n, pyast.Call)
                        and getattr(n.func, "id", None) == "DpError"]
    assert raised["lower_ops.py"] == [] and raised["fuse.py"] == []
    assert len(raised["lower.py"]) == 1  # _check_memory's "resource" error


def test_a_decision_the_checker_skipped_is_a_plan_error(monkeypatch):
    """With the checker's instance pass switched off, lowering meets what the checker should
    have refused, and says it is a bug in dp: through a decision it shares with the checker
    (the repeat limit) or through a primitive's rule (heads that do not divide the width)."""
    from dp.dsl import checker

    monkeypatch.setattr(checker, "instance_errors", lambda tprog: [])
    heads = load_text("Net: (R^10)^8 -> (R^10)^8\nNet(xs) = SelfAttention(xs; heads = 4)\n")
    with pytest.raises(PlanError, match="split_heads: 4 heads need"):
        lower(heads, "Net", 2)
    many = load_text("Net: (R^8)^4 -> (R^8)^4\n"
                     "Net(xs) = Transformer(xs; layers = 1e9, heads = 2, ff = 16)\n")
    with pytest.raises(PlanError, match="met what the checker let through: repeat makes"):
        lower(many, "Net", 2)


def test_a_models_own_size_arguments_take_their_defaults():
    """`Net(x; m = 8)` run as the model: m is 8 in the checker's instance pass and in lowering."""
    tprog = load_text("Net: R^4 -> R^3\n"
                      "Net(x; m = 8) = FeedForward(FeedForward(x) : R^m; act = identity)\n")
    shapes = {path: spec.shape for path, spec in lower(tprog, "Net", 2).specs.items()}
    assert shapes["Net.feedforward1.W"] == (8, 4) and shapes["Net.feedforward2.W"] == (3, 8)


def test_a_sequence_reduction_of_a_parameter_reduces_its_own_first_axis():
    """seq_mean of a parameter sequence (no batch axis) is its mean over positions."""
    import numpy as np

    model = Model(load_text("Net: (R^4)^5 -> R^4\nNet(xs) = seq_mean(P) + seq_last(xs)\n"
                            "  param P: (R^4)^5 ~ normal(1)\n"), "Net", dtype=np.float64)
    model.init(0)
    xs = np.random.default_rng(1).normal(size=(2, 5, 4))
    want = model.params["Net.P"].mean(axis=0) + xs[:, -1]
    np.testing.assert_allclose(model.predict(xs), want, rtol=1e-12)
