"""Every standard-library module passes JAX's adjoint identity in float64 (reliability target 4).

For a module f of its inputs and parameters, one random direction t over all of them and one
random cotangent c of its output (np.random.RandomState(0)):

    |<t, vjp(c)> - <jvp_fd(t), c>| <= 1e-5 * n

where jvp_fd(t) = (f(. + eps t) - f(. - eps t)) / (2 eps) with eps = 1e-4 (central differences)
and n counts the entries of the real inputs and the parameters (token ids take no direction).
Each module is run at small sizes inside a concrete `Net`; `test_every_stdlib_module_has_a_case`
fails when a module is added to stdlib/*.dp without a case here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl.loader import load, load_text
from dp.interpreter.core.model import Model

EPS = 1e-4
BOUND = 1e-5

# module -> a concrete program that runs it at small sizes (its `Net` is checked)
CASES = {
    "identity": "Net: R -> R\nNet(x) = identity(x)",
    "FeedForward": "Net: R^5 -> R^3\nNet(x) = FeedForward(x; act = tanh)",
    "Linear": "Net: R^5 -> R^3\nNet(x) = Linear(x)",
    "Attention": "Net: ((R^8)^2, (R^8)^3) -> (R^8)^2\nNet(qs, xs) = Attention(qs, xs; heads = 2)",
    "SelfAttention": "Net: (R^8)^3 -> (R^8)^3\n"
                     "Net(xs) = SelfAttention(xs; heads = 2, mask = causal)",
    "LayerNorm": "Net: R^6 -> R^6\nNet(x) = LayerNorm(x)",
    "AddNorm": "Net: (R^8)^3 -> (R^8)^3\nNet(xs) = AddNorm(xs; f = SelfAttention(; heads = 2))",
    "PreNorm": "Net: (R^8)^3 -> (R^8)^3\nNet(xs) = PreNorm(xs; f = PositionWise(; ff = 6))",
    "PositionWise": "Net: (R^4)^3 -> (R^4)^3\nNet(xs) = PositionWise(xs; ff = 6)",
    "TransformerBlock": "Net: (R^8)^3 -> (R^8)^3\n"
                        "Net(xs) = TransformerBlock(xs; heads = 2, ff = 6)",
    "PreNormBlock": "Net: (R^8)^3 -> (R^8)^3\n"
                    "Net(xs) = PreNormBlock(xs; heads = 2, ff = 6, mask = causal)",
    "Positions": "Net: (R^4)^3 -> (R^4)^3\nNet(xs) = Positions(xs)",
    "Transformer": "Net: (R^8)^3 -> (R^8)^3\n"
                   "Net(xs) = Transformer(xs; layers = 2, heads = 2, ff = 6)",
    "BERT": "Net: Token[7]^3 -> (R^8)^3\n"
            "Net(ts) = BERT(ts; layers = 1, heads = 2, ff = 6, d = 8)",
    "DecoderBlock": "Net: ((R^8)^2, (R^8)^3) -> (R^8)^2\n"
                    "Net(ys, xs) = DecoderBlock(ys, xs; heads = 2, ff = 6)",
    "SequenceToSequence": "Net: Token[5]^3 -> Token[6]^2\n"
                          "Net(ts) = SequenceToSequence(ts; d = 8, layers = 1, heads = 2, "
                          "ff = 6)",
    "SimpleRNN": "Net: (R^4, R^3) -> R^4\nNet(h, x) = SimpleRNN(h, x)",
    "LSTM": "Net: (R^4)^3 -> (R^5)^3\nNet(xs) = scan(LSTM, xs)",
    "SequenceRNN": "Net: (R^3)^4 -> (R^5)^4\nNet(xs) = SequenceRNN(xs; cell = SimpleRNN)",
    "Collapse": "Net: (R^4)^3 -> R^4\nNet(xs) = Collapse(xs; over = seq_max)",
    "EmbedToken": "Net: Token[7] -> R^4\nNet(t) = EmbedToken(t)",
    "GenerateToken": "Net: R^4 -> Token[7]\nNet(x) = GenerateToken(x)",
    "LanguageModel": "Net: Token[7]^4 -> Token[7]^4\n"
                     "Net(ts) = LanguageModel(ts; body = SequenceRNN(; cell = LSTM, h = 5), "
                     "d = 4)",
    "Conv": "Net: R^(2, 5, 5) -> R^(3, 5, 5)\nNet(x) = Conv(x; act = tanh)",
    "StridedConv": "Net: R^(2, 7, 7) -> R^(3, 4, 4)\n"
                   "Net(x) = StridedConv(x; k = 3, s = 2, p = 1, act = tanh)",
    "MaxPool": "Net: R^(2, 4, 4) -> R^(2, 2, 2)\nNet(x) = MaxPool(x)",
    "OverlapPool": "Net: R^(2, 7, 7) -> R^(2, 3, 3)\nNet(x) = OverlapPool(x)",
    "RectConv": "Net: R^(2, 5, 5) -> R^(3, 5, 5)\nNet(x) = RectConv(x; kh = 1, kw = 3)",
    "GroupConv": "Net: R^(4, 5, 5) -> R^(6, 5, 5)\nNet(x) = GroupConv(x; g = 2, act = tanh)",
    "DepthwiseConv": "Net: R^(3, 5, 5) -> R^(3, 5, 5)\nNet(x) = DepthwiseConv(x; act = tanh)",
    "AvgPool": "Net: R^(2, 4, 4) -> R^(2, 2, 2)\nNet(x) = AvgPool(x)",
    "GlobalAvgPool": "Net: R^(3, 4, 4) -> R^3\nNet(x) = GlobalAvgPool(x)",
    "Conv1D": "Net: (R^3)^5 -> (R^4)^5\nNet(xs) = Conv1D(xs)",
}

# Modules checked through their parts only, and why.
PARTS_ONLY = {
    "AlexNet": "61 million parameters at its fixed 224 x 224 input; its layers (StridedConv, "
               "OverlapPool, Conv, FeedForward) each have a case, and VARIANTS has its layer "
               "sequence at small sizes",
}


def adjoint_gap(model: Model, rng: np.random.RandomState, eps: float = EPS
                ) -> tuple[float, int]:
    """|<t, vjp(c)> - <jvp_fd(t), c>| for one random direction and cotangent, and n."""
    xs = []
    for t, shape in zip(model.sig.args, model.arg_shapes, strict=True):
        shape = (2,) + tuple(shape)
        xs.append(rng.randint(0, t.vocab, shape).astype(np.int64) if t.vocab is not None
                  else rng.uniform(-2, 2, shape))
    if model.feedback:  # the tokens before each position
        shape = (2,) + tuple(model.out_shape[:-1])
        xs.append(rng.randint(0, model.out_shape[-1], shape).astype(np.int64))
    real = [i for i, x in enumerate(xs) if x.dtype == np.float64]
    t_params = rng.standard_normal(model.flat.shape)
    t_inputs = {i: rng.standard_normal(xs[i].shape) for i in real}
    out, pullback = model.vjp(*xs)
    c = rng.standard_normal(out.shape)
    dxs, dparams = pullback(c)
    grad_flat = np.concatenate([dparams[p].reshape(-1) for p in model.params]) \
        if model.params else np.zeros(0)
    assert [v.size for v in model.params.values()] == [dparams[p].size for p in model.params]
    left = float(t_params @ grad_flat) + sum(float(np.sum(t_inputs[i] * dxs[i])) for i in real)

    def moved(sign: float) -> np.ndarray:
        keep = model.flat.copy()
        model.flat += sign * eps * t_params
        out = model.vjp(*[x + sign * eps * t_inputs[i] if i in t_inputs else x
                          for i, x in enumerate(xs)])[0]
        model.flat[...] = keep
        return out

    jvp = (moved(1.0) - moved(-1.0)) / (2 * eps)
    right = float(np.sum(jvp * c))
    n = model.flat.size + sum(xs[i].size for i in real)
    return abs(left - right), n


@pytest.mark.parametrize("module", sorted(CASES))
def test_adjoint_identity(module):
    model = Model(load_text(CASES[module]), "Net", dtype=np.float64)
    rng = np.random.RandomState(0)
    model.init(0)
    model.flat += rng.uniform(-0.1, 0.1, model.flat.shape)  # no bias exactly at a relu's kink
    gap, n = adjoint_gap(model, rng)
    assert n > 0
    assert gap <= BOUND * n, f"{module}: |<t, vjp(c)> - <jvp(t), c>| = {gap:.3g} > {BOUND * n:g}"


# Beyond one case per module: Collapse each of its four ways, and AlexNet's exact layer
# sequence (11x11 filters at stride 4, padding 2, the overlapping pools, three dense layers)
# with few channels on a 63 x 63 image. A step of 1e-4 along a direction over all of its 27,638
# entries moves some relus and pool maxima across their kinks (the gap is 0.025, under the
# bound of 0.28 but not by much); with eps = 1e-6 no kink is crossed, and the gap, 1.7e-9, must
# be within 1e-10 * n.
VARIANTS = {
    **{f"Collapse over {over}": f"Net: (R^4)^3 -> R^4\nNet(xs) = Collapse(xs; over = {over})"
       for over in ("seq_mean", "seq_max", "seq_first", "seq_last")},
    "AlexNet, small": """\
Net: R^(3, 63, 63) -> R^10
Net(x) =
  v1 = OverlapPool(StridedConv(x; c2 = 4, k = 11, s = 4, p = 2))
  v2 = OverlapPool(Conv(v1; c2 = 6, k = 5))
  v3 = OverlapPool(Conv(Conv(Conv(v2; c2 = 8); c2 = 6); c2 = 6))
  h = FeedForward(FeedForward(flatten(v3); m = 16); m = 16)
  FeedForward(h; act = identity)""",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adjoint_identity_of_variants(variant):
    model = Model(load_text(VARIANTS[variant]), "Net", dtype=np.float64)
    rng = np.random.RandomState(0)
    model.init(0)
    model.flat += rng.uniform(-0.1, 0.1, model.flat.shape)
    eps, bound = (1e-6, 1e-10) if variant.startswith("AlexNet") else (EPS, BOUND)
    gap, n = adjoint_gap(model, rng, eps)
    assert gap <= bound * n, f"{variant}: {gap:.3g} > {bound * n:g}"


def test_the_identity_fails_for_a_wrong_gradient(monkeypatch):
    """The bound is tight enough to see one wrong backward rule: tanh's, doubled."""
    from dataclasses import replace

    from dp.interpreter.core import primitives

    tanh = primitives.PRIMITIVES["tanh"]

    def doubled(g, out, inputs, wants, **params):
        return tuple(None if d is None else 2 * d for d in tanh.backward(g, out, inputs, wants,
                                                                        **params))

    monkeypatch.setitem(primitives.PRIMITIVES, "tanh", replace(tanh, backward=doubled))
    model = Model(load_text(CASES["FeedForward"]), "Net", dtype=np.float64)
    model.init(0)
    gap, n = adjoint_gap(model, np.random.RandomState(0))
    assert gap > 100 * BOUND * n


def test_every_stdlib_module_has_a_case():
    stdlib = ROOT / "stdlib"
    tprog = load([])
    defined = {name for name, d in tprog.defs.items() if Path(d.span.file).parent == stdlib}
    assert defined == set(CASES) | set(PARTS_ONLY), (
        f"no adjoint case for {sorted(defined - set(CASES) - set(PARTS_ONLY))}; "
        f"cases for modules that are gone: {sorted(set(CASES) | set(PARTS_ONLY) - defined)}")


# --- second order (reliability target 3): not supported, and nothing can ask for it ----------

DERIVATIVE_WORDS = ("grad", "vjp", "jvp", "jacobian", "hessian", "deriv", "diff")


def test_second_order_is_not_supported(write_program):
    """dp differentiates once: training takes the first derivative of a loss the train block
    names, and each primitive's backward rule is NumPy or Numba code that no pass of dp
    differentiates again. Nothing can ask for more: no function, keyword, loss or optimizer of
    the language names a derivative, the Python API's two entry points give arrays, and a
    primitive has one backward rule and no rule for the backward's own derivative."""
    from dataclasses import fields

    import dp
    from dp.dsl.blocks import LOSSES, OPTIMIZERS
    from dp.dsl.builtins import BUILTINS
    from dp.interpreter.core.primitives import Primitive

    grammar = (ROOT / "dsl" / "grammar.lark").read_text()
    names = [*BUILTINS, *LOSSES, *OPTIMIZERS, *re.findall(r'"([A-Za-z_]+)"', grammar)]
    assert not [n for n in names if any(w in n.lower() for w in DERIVATIVE_WORDS)]
    path = write_program("Net: R^4 -> R^4\nNet(x) = grad(FeedForward, x)\n")
    code, out, err = dp_here("check", path)
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == "error[name]: unknown module 'grad'"

    entry = {n for n in dir(dp.Net) if any(w in n.lower() for w in DERIVATIVE_WORDS)}
    assert entry == {"vjp", "value_and_grad"}
    assert not [n for n in dir(dp) if any(w in n.lower() for w in DERIVATIVE_WORDS)]
    net = dp.loads("Net: R^3 -> R^2\nNet(x) = FeedForward(x; act = tanh)\n").model("Net")
    out, pullback = net.vjp(np.ones((1, 3), np.float32))
    dxs, dparams = pullback(np.ones_like(out))
    assert all(type(a) is np.ndarray for a in [*dxs, *dparams.values()])

    assert [f.name for f in fields(Primitive)] == [
        "name", "shape", "forward", "backward", "smooth", "kinks", "integer_inputs", "saves",
        "keyed"]
