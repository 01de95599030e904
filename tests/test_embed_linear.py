"""embed_linear: fuse.py's `linear(embed(ids, E), W, b)`, computed on the table's rows when
there are at least as many ids as rows. Both paths against NumPy and float64 central
differences, the fused model against the unfused one, where the rewrite applies and where it
must not, and the id range check it keeps from embed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dp.dsl import load_text
from dp.dsl.errors import DpError
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import get, sequence
from gradcheck import check_primitive

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"table": True, "gather": False}


def _inputs(shape, nv, d, m, bias=True, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, nv, shape)
    arrays = [rng.normal(size=s).astype(dtype) for s in [(nv, d), (m, d)] + [(m,)] * bias]
    return (ids, *arrays)


def _reference(ids, table, w, *b):
    """E[ids] @ W.T + b and its vector-Jacobian product for g, in float64 with np.add.at."""
    x = table[ids]
    out = x @ w.T + (b[0] if b else 0)

    def vjp(g):
        g2 = g.reshape(-1, w.shape[0])
        de = np.zeros_like(table)
        np.add.at(de, ids.reshape(-1), g2 @ w)
        return (de, g2.T @ x.reshape(-1, w.shape[1])) + ((g2.sum(0),) if b else ())
    return out, vjp


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bias", [True, False])
def test_both_paths_match_numpy_and_central_differences(path, bias, monkeypatch):
    monkeypatch.setattr(sequence, "_on_table", lambda n, nv: PATHS[path])
    prim = get("embed_linear")
    inputs = _inputs((3, 4), 5, 3, 2, bias)
    out = prim.forward(*inputs)
    want, vjp = _reference(*inputs)
    assert out.shape == prim.shape(*(a.shape for a in inputs)) == (3, 4, 2)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)
    g = np.random.default_rng(1).normal(size=out.shape)
    grads = prim.backward(g, out, inputs, (False,) + (True,) * (len(inputs) - 1))
    assert grads[0] is None
    for got, ref in zip(grads[1:], vjp(g), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    check_primitive(prim, inputs, {}, eps=1e-6, atol=1e-5, rtol=1e-5)


def test_the_path_is_chosen_by_the_number_of_ids():
    assert sequence._on_table(103, 103) and sequence._on_table(2048, 103)
    assert not sequence._on_table(64, 103)  # batch-1 generation gathers first


@pytest.mark.parametrize("path", PATHS)
def test_unwanted_gradients_are_not_computed(path, monkeypatch):
    monkeypatch.setattr(sequence, "_on_table", lambda n, nv: PATHS[path])
    inputs = _inputs((2, 3), 4, 3, 2)
    prim = get("embed_linear")
    out = prim.forward(*inputs)
    g = np.ones_like(out)
    assert prim.backward(g, out, inputs, (False,) * 4) == (None,) * 4
    de, dw, db = prim.backward(g, out, inputs, (False, False, True, False))[1:]
    assert de is None and db is None and dw.shape == (2, 3)


CHARLM = (ROOT / "programs/charlm_rnn.dp").read_text()


def _prims(source: str, name: str, batch: int) -> Counter:
    return Counter(e.prim for e in lower(load_text(source), name, batch).eqns)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM"])
def test_the_char_models_fuse_their_embedding_and_input_projection(cell):
    source = CHARLM.replace("cell: RNN = SimpleRNN", f"cell: RNN = {cell}")
    for batch in (1, 32):  # either side of the vocabulary's 103 token positions
        eqns = lower(load_text(source), "CharRNN", batch).eqns
        scan = "lstm_scan" if cell == "LSTM" else "rnn_scan"
        prims = [e.prim for e in eqns]
        fused = eqns[prims.index("embed_linear")]
        assert prims.count("embed_linear") == 1 and prims[prims.index("embed_linear") + 1] == scan
        assert fused.inputs[0].shape == (batch, 64)  # the ids as given: no reshape left
        assert fused.out.shape == (batch, 64, 512 if cell == "LSTM" else 128)
        assert "embed" not in Counter(e.prim for e in eqns)


SHARED = """
Net: Token[9]^4 -> (R^6)^4
Net(ts) =
  es = map(EmbedToken(; d = 3), ts)
  SequenceRNN(es; cell = SimpleRNN, h = 6) + SequenceRNN(es; cell = LSTM, h = 6)
"""


def test_an_embedding_with_another_use_is_left_alone():
    prims = _prims(SHARED, "Net", 8)
    assert prims["embed"] == 1 and prims["linear"] == 2 and "embed_linear" not in prims
    once = SHARED.replace(" + SequenceRNN(es; cell = LSTM, h = 6)", "")
    prims = _prims(once, "Net", 8)
    assert prims["embed_linear"] == 1 and "embed" not in prims and "linear" not in prims


TINY = """
Tiny: Token[9]^6 -> Token[9]^6
Tiny(ts) = LanguageModel(ts; body = SequenceRNN(; cell = {cell}, h = 5), d = 4)
"""


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM"])
def test_fused_model_predicts_what_the_unfused_one_does(cell, monkeypatch):
    """float32, same parameters; the unfused model lowers its plans without the rewrite."""
    from dp.interpreter.core import fuse
    fused, unfused = (Model(load_text(TINY.format(cell=cell)), "Tiny") for _ in range(2))
    fused.init(0)
    unfused.init(1)
    for path in fused.params:
        unfused.params[path][...] = fused.params[path]
    rng = np.random.default_rng(3)
    for batch in (1, 2, 7):  # 6 ids (gather first), then 12 and 42 (on the table's 9 rows)
        ts = rng.integers(0, 9, (batch, 6))
        got = fused.predict(ts)
        with monkeypatch.context() as m:
            m.setattr(fuse._Fuser, "_embed_linear", lambda self, e: None)
            want = unfused.predict(ts)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert any(e.prim == "embed_linear" for e in lower(fused.tprog, "Tiny", 7).eqns)


@pytest.mark.parametrize("batch", [1, 4])
def test_a_bad_token_id_is_the_same_data_error(batch):
    model = Model(load_text(TINY.format(cell="SimpleRNN")), "Tiny")
    model.init(0)
    assert any(e.prim == "embed_linear" for e in lower(model.tprog, "Tiny", batch).eqns)
    for bad in (9, -1):
        ts = np.zeros((batch, 6), np.int64)
        ts[-1, 2] = bad
        with pytest.raises(DpError) as err:
            model.predict(ts)
        assert err.value.kind == "data" and isinstance(err.value, ValueError)
        assert err.value.message == (f"token id {bad} is out of range for an embedding table "
                                     f"of 9 rows (expected 0..8)")
