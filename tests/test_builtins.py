"""The table of builtins (dsl/builtins.py) against what lowers and runs them: every record names
registered primitives and a lowering that exists, every primitive has gradient-check cases, and
every builtin is used by a program here that checks and runs. Then the module arguments: each
is checked at every call against the signature it declares or its default's."""

from __future__ import annotations

import numpy as np
import pytest
from dp.dsl import DpError, load_text
from dp.dsl.builtins import BUILTINS
from dp.interpreter.core.lower import LOWERINGS
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import PRIMITIVES, get
from test_gradcheck import CASES


# --- the table against the interpreter --------------------------------------------------------
def test_every_builtin_lowers_to_registered_primitives() -> None:
    missing = {b.name: p for b in BUILTINS.values() for p in b.primitives if p not in PRIMITIVES}
    assert missing == {}


def test_every_builtin_has_a_lowering() -> None:
    none = [b.name for b in BUILTINS.values()
            if b.lowering is None and len(b.primitives) != 1]
    unknown = [b.name for b in BUILTINS.values()
               if b.lowering is not None and b.lowering not in LOWERINGS]
    assert (none, unknown) == ([], [])
    unused = set(LOWERINGS) - {b.lowering for b in BUILTINS.values()}
    assert unused == set()


def test_every_primitive_of_a_builtin_has_gradient_checks() -> None:
    covered = {case.prim for case in CASES}
    assert {p for b in BUILTINS.values() for p in b.primitives} - covered == set()


# --- every builtin checks and runs ---------------------------------------------------------------
def _elementwise_program(name: str) -> str:
    """Applied, passed as a configuration argument and mapped over a vector: f(x^2 + 1) each."""
    return (f"Apply: R^4 -> R^4\nApply(x; act = relu) = act(x)\n"
            f"Net: R^4 -> R^4\nNet(x) =\n  y = square(x) + 1\n"
            f"  {name}(y) + Apply(y; act = {name}) - map({name}, y)\n")


VECTORS = "Net: (R^4)^3 -> "
PROGRAMS = {
    "softmax": "Net: R^4 -> R^4\nNet(x) = softmax(x) + FeedForward(x; act = softmax)",
    "log_softmax": "Net: R^4 -> R^4\nNet(x) = log_softmax(x)",
    "normalize": "Net: R^4 -> R^4\nNet(x) = normalize(x)",
    "causal": VECTORS + "(R^4)^3\nNet(xs) = softmax(causal(xs @ transpose(xs))) @ xs"
              " + SelfAttention(xs; heads = 2, mask = causal)",
    "sum": VECTORS + "R^3\nNet(xs) = sum(xs) + map(sum, xs)",
    "mean": "Net: R^(2, 3) -> R\nNet(x) = mean(x)",
    "max": "Net: R^(2, 3) -> R^2\nNet(x) = map(max, x)",
    "conv2d": "Net: R^(1, 6, 6) -> R^(2, 3, 3)\nNet(x) = conv2d(x, W, b; stride = 2, padding = 1)\n"
              "  param W: R^(2, 1, 3, 3) ~ fan_in\n  param b: R^2 ~ zeros",
    "maxpool2d": "Net: R^(1, 4, 4) -> R^(1, 2, 2)\nNet(x) = maxpool2d(x)",
    "avgpool2d": "Net: R^(1, 5, 5) -> R^(1, 2, 2)\nNet(x) = avgpool2d(x; size = 3, stride = 2)",
    "global_avgpool2d": "Net: R^(3, 4, 4) -> R^3\nNet(x) = global_avgpool2d(x)",
    "dropout": "Net: R^4 -> R^4\nNet(x) = dropout(x) + dropout(x; p = 0.5)",
    "conv1d": VECTORS + "(R^2)^3\nNet(xs) = conv1d(xs, W, b)\n"
              "  param W: R^(2, 4, 3) ~ fan_in\n  param b: R^2 ~ zeros",
    "flatten": "Net: R^(1, 4, 4) -> R^16\nNet(x) = flatten(x)",
    "map": VECTORS + "(R^2)^3\nNet(xs) = map(FeedForward(; m = 2), xs)",
    "scan": VECTORS + "(R^5)^3\nNet(xs) = scan(SimpleRNN, xs)",
    "token": "Net: (R^4)^3 -> Token[4]^3\nNet(xs) = map(token, xs)",
    "seq_mean": VECTORS + "R^4\nNet(xs) = seq_mean(xs)",
    "seq_max": VECTORS + "R^4\nNet(xs) = Collapse(xs; over = seq_max)",
    "seq_first": VECTORS + "R^4\nNet(xs) = seq_first(xs)",
    "seq_last": "Net: ((R^4)^3)^2 -> (R^4)^2\nNet(xs) = map(seq_last, xs)",
    "split_heads": VECTORS + "(R^4)^3\nNet(xs) = join_heads(split_heads(xs; h = 2))",
    "join_heads": VECTORS + "(R^4)^3\nNet(xs) = join_heads(split_heads(xs; h = 4))",
    "transpose": "Net: R^(2, 3) -> R^(3, 2)\nNet(x) = transpose(x)",
    "repeat": "Net: R^4 -> R^4\nNet(x) = repeat(2, FeedForward, x)",
    "where": "Net: R^4 -> R^4\nNet(x) = where(x > 0, sqrt(x), 0) + where(1 < x, x, 1)",
}
PROGRAMS.update({b.name: _elementwise_program(b.name) for b in BUILTINS.values()
                 if b.lowering is None})


def test_every_builtin_has_a_program() -> None:
    assert set(PROGRAMS) == set(BUILTINS)


def _run(text: str, x: np.ndarray) -> np.ndarray:
    model = Model(load_text(text), "Net", dtype=np.float64)
    model.init(0)
    return model.predict(x)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_builtin_checks_and_runs(name: str) -> None:
    model = Model(load_text(PROGRAMS[name]), "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(0).uniform(-2, 2, (3,) + model.arg_shapes[0])
    out = model.predict(x)
    assert out.shape == (3,) + model.out_shape
    assert np.all(np.isfinite(out))
    if BUILTINS[name].lowering is None:  # f(y) + f(y) - f(y), with y = x^2 + 1
        np.testing.assert_allclose(out, get(name).forward(x * x + 1), rtol=1e-12, atol=1e-12)


# --- softplus ---------------------------------------------------------------------------------
def test_softplus_is_stable_for_large_inputs() -> None:
    x = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], np.float32)
    out = get("softplus").forward(x)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.logaddexp(0, x.astype(np.float64)), rtol=1e-6)
    (dx,) = get("softplus").backward(np.ones_like(x), out, (x,), (True,))
    np.testing.assert_allclose(dx, [0, 0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1, 1],
                               rtol=1e-6, atol=1e-20)


def test_a_feedforward_with_softplus_trains() -> None:
    text = "Net: R^4 -> R^3\nNet(x) = FeedForward(FeedForward(x; act = softplus) : R^8; " \
           "act = identity)"
    model = Model(load_text(text), "Net", dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64)
    x = np.eye(4)[y] * 2 + rng.normal(0, 0.3, (64, 4))
    first = model.loss_and_grad("cross_entropy", x, y)
    for _ in range(200):
        model.loss_and_grad("cross_entropy", x, y)
        model.flat -= 0.5 * model.grad_flat
    assert model.loss("cross_entropy", x, y) < first / 4


# --- builtins passed as modules give what a direct call gives ---------------------------------
def test_repeat_of_an_elementwise_builtin_applies_it_each_time() -> None:
    x = np.random.default_rng(1).uniform(-2, 2, (5, 4))
    out = _run("Net: R^4 -> R^4\nNet(x) = repeat(3, tanh, x)", x)
    np.testing.assert_allclose(out, np.tanh(np.tanh(np.tanh(x))), rtol=1e-12)


def test_map_of_a_sequence_reduction_reduces_each_element() -> None:
    xs = np.random.default_rng(2).uniform(-2, 2, (5, 2, 3, 4))
    out = _run("Net: ((R^4)^3)^2 -> (R^4)^2\nNet(xs) = map(seq_mean, xs)", xs)
    np.testing.assert_allclose(out, xs.mean(axis=2), rtol=1e-12)


def test_a_shape_keeping_builtin_passed_as_act_applies_to_the_vector() -> None:
    x = np.random.default_rng(3).uniform(-2, 2, (5, 4))
    out = _run("Apply: R^4 -> R^4\nApply(x; act = relu) = act(x)\n"
               "Net: R^4 -> R^4\nNet(x) = Apply(x; act = softmax)", x)
    np.testing.assert_allclose(out, np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-12)


def test_an_elementwise_builtin_fits_a_declared_shape_keeping_signature() -> None:
    """`f: R^4 -> R^4 = relu`: an elementwise function keeps any shape, so it fits."""
    wrap = "Wrap(; f: R^4 -> R^4 = relu): R^4 -> R^4\nWrap(x) = f(x)\nNet: R^4 -> R^4\n"
    x = np.random.default_rng(4).uniform(-2, 2, (5, 4))
    np.testing.assert_allclose(_run(wrap + "Net(x) = Wrap(x)", x), np.maximum(x, 0))
    np.testing.assert_allclose(_run(wrap + "Net(x) = Wrap(x; f = tanh)", x), np.tanh(x),
                               rtol=1e-12)
    err = _error(wrap.replace("R^4 -> R^4 = relu", "R^4 -> R^2 = relu") + "Net(x) = x")
    assert err.message == "Wrap needs 'f' to be R^4 -> R^2, but relu is R -> R"


# --- module arguments are checked at every call -----------------------------------------------
def _error(text: str) -> DpError:
    """The one error the checker gives, before anything is lowered."""
    with pytest.raises(DpError) as info:
        load_text(text)
    errors = getattr(info.value, "errors", [info.value])
    assert len(errors) == 1
    return errors[0]


TWO_ARGS = "F: (R^h, R^d) -> R^h\nF(h, x; cell = SimpleRNN) = cell(h, x)\n"
APPLY = "Apply: R^4 -> R^4\nApply(x; act = relu) = act(x)\n"
G = "G: R^4 -> R\nG(x; act = relu) = act(sum(x))\n"


@pytest.mark.parametrize("text, kind, message, where", [
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = seq_mean)", "type",
     "FeedForward needs 'act' to be R -> R like its default relu, but seq_mean is "
     "(R^d)^n -> R^d", (2, 31)),
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = SimpleRNN)", "type",
     "FeedForward needs 'act' to be R -> R like its default relu, but SimpleRNN is "
     "(R^h, R^d) -> R^h", (2, 31)),
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = FeedForward)", "type",
     "FeedForward needs 'act' to be R -> R like its default relu, but FeedForward is "
     "R^n -> R^m", (2, 31)),
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = sum)", "type",
     "FeedForward needs 'act' to be R -> R like its default relu, but sum is R^n -> R", (2, 31)),
    (TWO_ARGS + "Net: (R^4, R^4) -> R^4\nNet(h, x) = F(h, x; cell = relu)", "type",
     "F needs 'cell' to be (R^h, R^d) -> R^h like its default SimpleRNN, but relu is R -> R",
     (4, 28)),
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = conv2d)", "type",
     "conv2d cannot be passed as a module: apply it to its arguments, "
     "conv2d(x, W, b; stride = ..., padding = ..., groups = ...)", (2, 31)),
    ("Net: (R^4)^3 -> (R^4)^3\nNet(xs) = map(transpose, xs)", "type",
     "transpose cannot be passed as a module: apply it to its arguments, transpose(x)",
     (2, 15)),
    ("Net: (R^4)^3 -> R^4\nNet(xs) = map(seq_mean, xs)", "shape",
     "seq_mean expects (R^d)^n here, but an element of xs is R^4", (2, 25)),
    ("Net: (R^4)^3 -> (R^4)^3\nNet(xs) = map(sum, xs)", "shape",
     "Net should give (R^4)^3 (its signature), but map(...) is R^3", (2, 11)),
    ("Net: (R^4)^3 -> (R^4)^3\nNet(xs) = scan(relu, xs)", "arity",
     "scan needs a cell (state, input) -> state, but relu takes 1 argument (relu: R -> R)",
     (2, 16)),
    ("Net: R^4 -> R^4\nNet(x) = repeat(2, sum, x)", "shape",
     "repeat needs a module that gives back what it takes, but sum takes R^4 here and gives R",
     (2, 20)),
    ("Net: R^4 -> R^4\nNet(x) = repeat(2, SimpleRNN, x)", "arity",
     "repeat passes SimpleRNN 1 argument, but it takes 2 (SimpleRNN: (R^h, R^d) -> R^h)",
     (2, 20)),
    ("Net: R^4 -> R^4\nNet(x) = relu(x; k = 2)", "name",
     "relu has no argument 'k'; it has no size arguments", (2, 18)),
    ("Net: R^(4, 4) -> R^(4, 4)\nNet(x) = causal(x; h = 2)", "name",
     "causal has no argument 'h'; it has no size arguments", (2, 20)),
    # sizes only lowering knows: the module argument's own, or what the definition needs of it
    ("Fixed: (R^32)^n -> (R^32)^n\nFixed(xs) = xs\nNet: Token[10]^5 -> Token[10]^5\n"
     "Net(ts) = LanguageModel(ts; d = 64, body = Fixed)", "shape",
     "LanguageModel's 'body' is Fixed: (R^32)^n -> (R^32)^n, which cannot take (R^64)^5 "
     "here",
     (4, 11)),
    ("Wide: R^n -> R^4\nWide(x) = W x\n  param W: R^(4, n) ~ glorot\n"
     "F: R^4 -> R^3\nF(x; g: R^n -> R^m = FeedForward) = g(x)\n"
     "Net: R^4 -> R^3\nNet(x) = F(x; g = Wide)", "shape",
     "F needs its argument 'g' to give R^3 here, but Wide gives R^4", (5, 37)),
    (G + "Net: R^4 -> R\nNet(x) = G(x; act = softmax)", "shape",
     "softmax needs a vector, but it is given a number R here", (2, 20)),
    (APPLY + "Net: R^4 -> R^4\nNet(x) = Apply(x; act = causal)", "shape",
     "causal masks square scores R^(n, n), but it is given R^4 here", (2, 24)),
])
def test_module_argument_errors(text, kind, message, where) -> None:
    err = _error(text)
    assert (err.kind, err.message, (err.span.line, err.span.col)) == (kind, message, where)


def test_a_misspelt_abstract_name_is_an_error_whether_or_not_the_module_is_used() -> None:
    twice = "Twice(f: SequenceModle): SequenceModel\n"
    used = (twice + "Twice(xs) = f(f(xs))\n"
            "Shift: (R^d)^n -> (R^d)^n implements SequenceModel\nShift(xs) = xs + 1\n"
            "Net: (R^4)^3 -> (R^4)^3\nNet(xs) = Twice(xs; f = Shift)\n")
    for text in (twice, used, "F: R^4 -> R^4\nF(x; f: SequenceModle) = x\n"):
        with pytest.raises(DpError) as info:
            load_text(text)
        (err,) = getattr(info.value, "errors", [info.value])
        assert (err.kind, err.message, err.notes) == (
            "name", "unknown abstract module 'SequenceModle'", ("did you mean 'SequenceModel'?",))
        assert err.span.line == 1 + (text.startswith("F:"))
