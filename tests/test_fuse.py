"""The plan rewrites of interpreter/fuse.py: what they fuse, and what they must leave alone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dp.dsl import load_text
from dp.interpreter.lower import lower
from dp.interpreter.model import Model


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
