"""The plan rewrites of interpreter/fuse.py: what they fuse, and what they must leave alone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dp.dsl import load_text
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model


def _prims(source: str, name: str = "Net") -> Counter:
    return Counter(e.prim for e in lower(load_text(source), name, 2).eqns)


def test_bias_and_layernorm_fold_into_their_kernels():
    prims = _prims("""
Net: R^4 -> R^3
Net(x) = LayerNorm(Linear(x; m = 3))
""")
    assert prims == Counter({"linear": 1, "layernorm": 1})


def test_constants_and_a_bias_written_first_are_left_alone():
    source = """
Net: R^4 -> R^4
Net(x) = 1 + 2 * (b + W x)
  param W: R^(4, 4) ~ glorot
  param b: R^4 ~ normal(1)
"""
    assert _prims(source) == Counter({"linear": 1, "add": 2, "mul": 1})
    model = Model(load_text(source), "Net", dtype=np.float64)
    model.init(0)
    x = np.random.default_rng(0).normal(size=(2, 4))
    p = model.params
    np.testing.assert_allclose(model.predict(x),
                               1 + 2 * (p["Net.b"] + x @ p["Net.W"].T), rtol=1e-12)


def test_attention_fuses_only_when_the_weights_are_not_used_elsewhere():
    fused = _prims("""
Net: (R^8)^4 -> (R^8)^4
Net(xs) = SelfAttention(xs; heads = 2, mask = causal)
""")
    assert fused["attention"] == 1 and "softmax" not in fused
    kept = _prims("""
Net: (R^4)^3 -> (R^4)^3
Net(xs) =
  w = softmax(causal(xs @ transpose(xs)))
  w @ xs + w @ xs
""")
    assert kept["causal_softmax"] == 1 and kept["matmul"] == 3 and "attention" not in kept


def _fused_and_unfused(source: str, monkeypatch, x, *rules: str):
    """Predictions of Net in float64 with every rewrite, and with `rules` switched off."""
    from dp.interpreter.core import fuse
    fused = Model(load_text(source), "Net", dtype=np.float64)
    fused.init(0)
    got = fused.predict(x)
    for rule in rules:
        monkeypatch.setattr(fuse._Fuser, rule, lambda self, e: None)
    unfused = Model(load_text(source), "Net", dtype=np.float64)
    unfused.init(0)
    return got, unfused.predict(x), fused


FEEDFORWARD = """
Net: R^4 -> R^3
Net(x) = FeedForward(x; m = 3)
"""


def test_relu_folds_into_linear():
    eqns = lower(load_text(FEEDFORWARD), "Net", 2).eqns
    assert [(e.prim, dict(e.params)) for e in eqns] == [("linear", {"relu": True})]
    model = Model(load_text(FEEDFORWARD), "Net", dtype=np.float64)
    model.init(0)
    model.params["Net.feedforward.b"][:] = [0.5, -0.5, 0.1]
    x = np.random.default_rng(0).normal(size=(5, 4))
    p = model.params
    want = np.maximum(x @ p["Net.feedforward.W"].T + p["Net.feedforward.b"], 0)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12, atol=1e-15)
    nan = x.copy()
    nan[0, 0] = np.nan
    assert np.isnan(model.predict(nan)[0]).all()


def test_relu_of_a_linear_used_elsewhere_is_left_alone():
    source = """
Net: R^4 -> R^4
Net(x) =
  h = Linear(x; m = 4)
  relu(h) + h
"""
    assert _prims(source) == Counter({"linear": 1, "relu": 1, "add": 1})


ATTENTION = """
Net: (R^8)^4 -> (R^8)^4
Net(xs) = SelfAttention(xs; heads = 2, mask = causal)
"""


def test_attention_reads_its_heads_in_place(monkeypatch):
    eqns = lower(load_text(ATTENTION), "Net", 2).eqns
    att = [dict(e.params) for e in eqns if e.prim == "attention"]
    assert att == [{"causal": True, "heads": 2, "scale": 0.5}]
    assert "transpose" not in Counter(e.prim for e in eqns)
    x = np.random.default_rng(0).normal(size=(3, 4, 8))
    got, want, _ = _fused_and_unfused(ATTENTION, monkeypatch, x, "_heads")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_heads_shared_by_q_k_and_v_are_left_alone(monkeypatch):
    source = """
Net: (R^8)^4 -> (R^8)^4
Net(xs) =
  q = split_heads(xs; h = 2)
  join_heads(softmax(q @ transpose(q) / 2) @ q)
"""
    eqns = lower(load_text(source), "Net", 2).eqns
    prims = Counter(e.prim for e in eqns)
    assert prims["attention"] == 1 and prims["split_heads"] == prims["join_heads"] == 1
    assert "transpose" not in prims
    assert [dict(e.params) for e in eqns if e.prim == "attention"] == [
        {"causal": False, "scale": 0.5}]
    x = np.random.default_rng(0).normal(size=(3, 4, 8))
    got, want, _ = _fused_and_unfused(source, monkeypatch, x, "_heads", "_attention")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
