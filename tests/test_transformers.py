"""Attention and transformers from source text: the modules of stdlib/attention.dp against
NumPy, a whole block against central differences, and small models that train (issue 5)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl import load_text
from dp.interpreter.core.model import Model
from gradcheck import numeric_grad


def _layernorm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return g * (x - m) / np.sqrt(v + 1e-5) + b


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attention(p, prefix, qs, xs, heads, causal):
    """The reference: torch_ref.py's Block attention, in NumPy."""
    lin = [(p[f"{prefix}.linear{i}.W"], p[f"{prefix}.linear{i}.b"]) for i in range(1, 5)]
    b, n, d = qs.shape
    m, e = xs.shape[1], d // heads

    def split(y, length):
        return y.reshape(b, length, heads, e).transpose(0, 2, 1, 3)

    q = split(qs @ lin[0][0].T + lin[0][1], n)
    k = split(xs @ lin[1][0].T + lin[1][1], m)
    v = split(xs @ lin[2][0].T + lin[2][1], m)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(e)
    if causal:
        s = np.where(np.triu(np.ones((n, m), bool), 1), -np.inf, s)
    y = (_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    return y @ lin[3][0].T + lin[3][1]


@pytest.mark.parametrize("mask", ["identity", "causal"])
def test_self_attention_is_the_matrix_formula(mask):
    model = Model(load_text(f"""
Net: (R^8)^5 -> (R^8)^5
Net(xs) = SelfAttention(xs; heads = 2, mask = {mask})
"""), "Net", dtype=np.float64)
    model.init(1)
    xs = np.random.default_rng(0).normal(size=(3, 5, 8))
    want = _attention(model.params, "Net.selfattention.attention", xs, xs, 2, mask == "causal")
    np.testing.assert_allclose(model.predict(xs), want, rtol=1e-10, atol=1e-12)


def test_attention_of_queries_to_another_sequence():
    model = Model(load_text("""
Net: ((R^4)^2, (R^4)^6) -> (R^4)^2
Net(qs, xs) = Attention(qs, xs; heads = 1)
"""), "Net", dtype=np.float64)
    model.init(2)
    rng = np.random.default_rng(1)
    qs, xs = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 6, 4))
    ex = model._executable(3, None)
    got = ex.outputs(ex.forward(qs, xs))[0]
    np.testing.assert_allclose(got, _attention(model.params, "Net.attention", qs, xs, 1, False),
                               rtol=1e-10, atol=1e-12)


def test_pre_norm_block_is_the_reference_block():
    model = Model(load_text("""
Net: (R^8)^4 -> (R^8)^4
Net(xs) = PreNormBlock(xs; heads = 2, ff = 16, mask = causal)
"""), "Net", dtype=np.float64)
    model.init(3)
    p = model.params
    xs = np.random.default_rng(2).normal(size=(2, 4, 8))
    pre = "Net.prenormblock"
    ln1 = _layernorm(xs, p[f"{pre}.prenorm1.layernorm.g"], p[f"{pre}.prenorm1.layernorm.b"])
    h = xs + _attention(p, f"{pre}.prenorm1.f.attention", ln1, ln1, 2, True)
    ln2 = _layernorm(h, p[f"{pre}.prenorm2.layernorm.g"], p[f"{pre}.prenorm2.layernorm.b"])
    ff = f"{pre}.prenorm2.f"
    hidden = np.maximum(ln2 @ p[f"{ff}.feedforward.W"].T + p[f"{ff}.feedforward.b"], 0)
    want = h + hidden @ p[f"{ff}.linear.W"].T + p[f"{ff}.linear.b"]
    np.testing.assert_allclose(model.predict(xs), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block", ["TransformerBlock", "PreNormBlock"])
def test_a_whole_block_matches_central_differences(block):
    model = Model(load_text(f"""
Net: (R^4)^3 -> (R^4)^3
Net(xs) = {block}(xs; heads = 2, ff = 6, mask = causal)
"""), "Net", dtype=np.float64)
    model.init(4)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    model.loss_and_grad("squared_error", x, y)
    np.testing.assert_allclose(model.grad_flat, numeric_grad(model, "squared_error", x, y),
                               rtol=1e-5, atol=1e-7)


def test_causal_attention_does_not_look_ahead():
    """Changing the last position changes no earlier output."""
    model = Model(load_text("""
Net: (R^8)^6 -> (R^8)^6
Net(xs) = Transformer(xs; layers = 2, heads = 2, ff = 8, mask = causal)
"""), "Net", dtype=np.float64)
    model.init(5)
    xs = np.random.default_rng(4).normal(size=(1, 6, 8))
    changed = xs.copy()
    changed[0, -1] += np.arange(8.0)  # not a constant: LayerNorm would take that out
    a, b = model.predict(xs), model.predict(changed)
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], rtol=1e-12, atol=1e-12)
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1e-3


def test_repeat_makes_separate_blocks():
    tprog = load_text("""
Net: Token[5]^4 -> (R^8)^4
Net(ts) = BERT(ts; layers = 3, heads = 2, ff = 8, d = 8)
""")
    specs = Model(tprog, "Net").specs
    blocks = sorted({p.split(".")[2] for p in specs if "transformerblock" in p})
    assert blocks == ["transformerblock1", "transformerblock2", "transformerblock3"]


def test_the_transformer_charlm_has_the_reference_layout():
    code, out, err = dp_here("check", "programs/charlm_transformer.dp", cwd=ROOT)
    assert code == 0, err
    assert re.search(r"total +117,479\n", out)  # torch_ref.py's TinyGPT: 117,479


LM = """
Book: Token[11]^16 -> Token[11]^16
Book(ts) = LanguageModel(ts; d = 16,
                         body = Transformer(; layers = 1, heads = 2, ff = 32, mask = causal))

train Book on text("book.txt"):
  loss cross_entropy; optimizer adamw(lr = 0.01); batch 16; steps 150

run:
  print loss(Book, text("book.txt", split = test))
  print baseline(Book, text("book.txt", split = test))
  print generate(Book, "the ", 40; temperature = 0.5, top_k = 3, seed = 7)
"""


def test_a_transformer_language_model_trains_and_writes_text(tmp_path):
    """EmbedToken, Positions, PreNormBlock (SelfAttention, PreNorm, LayerNorm, PositionWise,
    Linear), Transformer and LanguageModel train together."""
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 60)
    program = tmp_path / "book.dp"
    program.write_text(LM)
    code, out, err = dp_here("train", str(program))
    assert code == 0, err
    loss = float(re.search(r"loss\(Book, .*\) = ([0-9.]+)", out)[1])
    base = float(re.search(r"baseline\(Book, .*\) = ([0-9.]+)", out)[1])
    assert loss < 0.5 * base
    written = out.rstrip("\n").splitlines()[-1]
    assert written.startswith("the ") and len(written) == 44


def test_post_norm_blocks_learn_digit_rows(tmp_path):
    """Positions, then TransformerBlocks (AddNorm) over the rows of a digit, then Collapse."""
    program = tmp_path / "rows.dp"
    program.write_text("""
Rows: (R^8)^8 -> R^10
Rows(rows) =
  blocks = repeat(2, TransformerBlock(; heads = 2, ff = 32), Positions(rows))
  FeedForward(Collapse(blocks); act = identity)

train Rows on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.003); batch 32; epochs 8

run:
  print accuracy(Rows, digits(split = test))
""")
    code, out, err = dp_here("train", str(program))
    assert code == 0, err
    assert float(re.search(r"accuracy\(Rows, .*\) = ([0-9.]+)", out)[1]) >= 0.8


def test_transpose_of_a_parameter_and_heads_of_a_parameter(tmp_path):
    model = Model(load_text("""
Net: R^4 -> R^3
Net(x) = transpose(W) @ x
  param W: R^(4, 3) ~ glorot
"""), "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(0).normal(size=(2, 4))
    np.testing.assert_allclose(model.predict(x), x @ model.params["Net.W"], rtol=1e-12)
    program = tmp_path / "heads.dp"
    program.write_text("Net: R^4 -> (R^4)^2\nNet(x) = join_heads(split_heads(P; h = 2))\n"
                       "  param P: (R^4)^2 ~ glorot\n")
    code, out, err = dp_here("check", str(program))
    assert code == 1
    assert err.startswith("error[type]: split_heads needs a batched value (a module's input or "
                          f"what it computed from it)\n  --> {program}:2:21\n")
