"""Registry completeness: every primitive has a shape rule, a forward, a backward
and at least one gradient-check case, and the shape rules reject what they must."""

from __future__ import annotations

import pytest

from dp.interpreter.core.primitives import PRIMITIVES, Primitive, get
from test_gradcheck import CASES

# The primitive names the lowering relies on (the brief's list); none may go missing.
EXPECTED = {
    "neg", "relu", "tanh", "sigmoid", "exp", "log", "sqrt", "abs", "square", "gelu", "identity",
    "add", "sub", "mul", "div", "maximum", "minimum",
    "linear", "matmul", "transpose", "reshape", "take", "fill", "stack", "concat",
    "sum", "mean", "max", "softmax", "log_softmax", "logsumexp",
    "cross_entropy", "squared_error", "batch_mean", "scored_mean",
    "conv2d", "maxpool2d",
    "embed", "rnn_scan", "lstm_scan",
    "layernorm", "causal_softmax", "attention",
}


def test_expected_primitives_are_registered() -> None:
    missing = sorted(EXPECTED - set(PRIMITIVES))
    assert not missing, f"not registered: {missing}"


def test_every_primitive_has_all_rules() -> None:
    missing = [f"{rule} for {name!r} not registered"
               for name, prim in PRIMITIVES.items()
               for rule in ("shape", "forward", "backward")
               if not callable(getattr(prim, rule, None))]
    assert not missing, "\n".join(missing)


def test_every_primitive_has_a_gradcheck_case() -> None:
    covered = {case.prim for case in CASES}
    missing = sorted(set(PRIMITIVES) - covered)
    assert not missing, f"no gradcheck case for: {missing}"
    unknown = sorted(covered - set(PRIMITIVES))
    assert not unknown, f"gradcheck cases for unregistered primitives: {unknown}"


def test_every_primitive_has_three_cases() -> None:
    counts = {name: sum(case.prim == name for case in CASES) for name in PRIMITIVES}
    assert [n for n, k in counts.items() if k < 3] == []


def test_records_are_consistent() -> None:
    for name, prim in PRIMITIVES.items():
        assert isinstance(prim, Primitive) and prim.name == name
        assert isinstance(prim.smooth, bool)
        assert all(callable(k) for k in prim.kinks), name


def test_missing_primitive_message() -> None:
    with pytest.raises(KeyError, match="vjp for 'upsample2d' not registered"):
        get("upsample2d")


@pytest.mark.parametrize("name, shapes, params, words", [
    ("add", ((4, 5), (3, 5)), {}, "do not broadcast"),
    ("linear", ((32, 784), (10, 512)), {}, "784 != 512"),
    ("linear", ((32, 784), (784,)), {}, "W [m, n]"),
    ("matmul", ((2, 3), (4, 5)), {}, "3 != 4"),
    ("matmul", ((2, 3, 4), (5, 4, 2)), {}, "do not broadcast"),
    ("transpose", ((2, 3),), {"axes": (0, 0)}, "permutation"),
    ("reshape", ((2, 3),), {"shape": (4, 2)}, "cannot reshape"),
    ("sum", ((2, 3),), {"axes": (2,)}, "axes"),
    ("max", ((0, 3),), {"axes": (0,)}, "empty"),
    ("softmax", ((),), {}, "rank >= 1"),
    ("cross_entropy", ((4, 10), (5,)), {}, "labels"),
    ("squared_error", ((4, 2), (4, 3)), {}, "differ"),
    ("batch_mean", ((),), {}, "batch axis"),
    ("scored_mean", ((4,), (5,)), {}, "one shape"),
    ("conv2d", ((1, 8, 8), (16, 1, 3, 3), (16,)), {"stride": 1, "padding": 1}, "x [B, C, H, W]"),
    ("conv2d", ((2, 3, 8, 8), (16, 1, 3, 3), (16,)), {"stride": 1, "padding": 1},
     "has 3 channels but w [16, 1, 3, 3] expects 1"),
    ("maxpool2d", ((2, 3, 1, 1),), {"size": 2, "stride": 2}, "does not fit"),
])
def test_shape_rules_reject_bad_shapes(name, shapes, params, words) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        get(name).shape(*shapes, **params)
