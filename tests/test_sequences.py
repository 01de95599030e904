"""Sequences and tokens from source text: map, scan, embeddings, the language model, text
data, generation, and the digits read row by row (issue 4)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, dp_here
from gradcheck import numeric_grad
from dp.dsl import load_text
from dp.interpreter.core import lower as lower_module
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import typecheck_plan

TINY_LM = """
Tiny: Token[7]^5 -> Token[7]^5
Tiny(ts) = LanguageModel(ts; body = SequenceRNN(; cell = SimpleRNN, h = 6), d = 4)
"""

# a cell of the user's: scan unrolls it, one inlined step per element
MY_CELL = """
MyCell: (R^h, R^d) -> R^h implements RNN
MyCell(h, x) = tanh(U h + V x + m)
  param U: R^(h, h) ~ fan_in
  param V: R^(h, d) ~ glorot
  carry m: R^h = 0.5 * m + 0.5 * tanh(V x)
"""


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "MyCell"])
def test_language_model_gradient_matches_central_differences(cell):
    """Embedding gather, the scan (fused or unrolled) and the per-position scores, end to end,
    through the whole sequence."""
    model = Model(load_text(TINY_LM.replace("SimpleRNN", cell) + MY_CELL), "Tiny",
                  dtype=np.float64)
    model.init(0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))
    model.loss_and_grad("cross_entropy", x, y)
    np.testing.assert_allclose(model.grad_flat, numeric_grad(model, "cross_entropy", x, y),
                               rtol=1e-5, atol=1e-7)


def test_the_fused_scan_is_the_cell_written_in_the_language():
    """The kernel substitutes for SimpleRNN; the definition stays the specification."""
    tprog = load_text("""
Seq: (R^4)^5 -> (R^6)^5
Seq(xs) = SequenceRNN(xs; cell = SimpleRNN)

Step: (R^6, R^4) -> R^6
Step(h, x) = SimpleRNN(h, x)
""")
    seq = Model(tprog, "Seq", dtype=np.float64)
    seq.init(3)
    step = Executable(lower(tprog, "Step", 2), np.float64)
    step.bind({f"Step.simplernn.{k}": seq.params[f"Seq.sequencernn.cell.{k}"]
               for k in "UVb"})
    xs = np.random.default_rng(1).normal(size=(2, 5, 4))
    h, want = np.zeros((2, 6)), []
    for t in range(5):
        h = step.outputs(step.forward(h, xs[:, t]))[0]
        want.append(h)
    np.testing.assert_allclose(seq.predict(xs), np.stack(want, axis=1), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM"])
def test_the_fused_kernels_compute_what_the_unrolled_cells_do(cell, monkeypatch):
    """The same parameters give the same outputs and gradients with the kernel and without it
    (scan then unrolls the cell's language definition, LSTM's carried memory included)."""
    tprog = load_text(f"""
Seq: (R^4)^5 -> R^6
Seq(xs) = seq_mean(SequenceRNN(xs; cell = {cell}, h = 6))
""")
    xs = np.random.default_rng(4).normal(size=(3, 5, 4))
    y = np.random.default_rng(5).normal(size=(3, 6))
    runs = []
    for kernels in (lower_module.SCAN_KERNELS, {}):
        monkeypatch.setattr(lower_module, "SCAN_KERNELS", kernels)
        model = Model(tprog, "Seq", dtype=np.float64)
        model.init(2)
        out = model.predict(xs)
        model.loss_and_grad("squared_error", xs, y)
        runs.append((out, model.grad_flat, {e.prim for e in model._executable(3, None).plan.eqns}))
    (fused, dfused, fprims), (unrolled, dunrolled, uprims) = runs
    assert fprims - uprims == ({"rnn_scan"} if cell == "SimpleRNN" else {"lstm_scan", "concat"})
    np.testing.assert_allclose(fused, unrolled, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dfused, dunrolled, rtol=1e-10, atol=1e-13)


# the body of SimpleRNN in a user's cell, with or without the declaration of its kernel
OWN_CELL = """
Own: (R^h, R^d) -> R^h implements RNN
Own(h, x; act = tanh) = act(U h + V x + b)
  param U: R^(h, h) ~ fan_in
  param V: R^(h, d) ~ fan_in
  param b: R^h ~ zeros
{kernel}
Seq: (R^4)^5 -> R^6
Seq(xs) = seq_mean(SequenceRNN(xs; cell = Own, h = 6))
"""


def _run_own(kernel: str, kernels, monkeypatch):
    monkeypatch.setattr(lower_module, "SCAN_KERNELS", kernels)
    model = Model(load_text(OWN_CELL.format(kernel=kernel)), "Seq", dtype=np.float64)
    model.init(2)
    xs = np.random.default_rng(4).normal(size=(3, 5, 4))
    model.loss_and_grad("squared_error", xs, np.random.default_rng(5).normal(size=(3, 6)))
    prims = {e.prim for e in model._executable(3, None).plan.eqns}
    return model.predict(xs), model.grad_flat, prims


def test_a_cell_that_declares_its_kernel_is_fused_by_the_declaration_not_its_name(monkeypatch):
    """Own is fused because it says `kernel rnn_scan`, and computes what its unrolled
    definition does; without the declaration it is unrolled."""
    kernels = lower_module.SCAN_KERNELS
    fused, dfused, fprims = _run_own("  kernel rnn_scan", kernels, monkeypatch)
    unrolled, dunrolled, uprims = _run_own("  kernel rnn_scan", {}, monkeypatch)
    assert "rnn_scan" in fprims and "rnn_scan" not in uprims
    np.testing.assert_allclose(fused, unrolled, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dfused, dunrolled, rtol=1e-10, atol=1e-13)
    plain, dplain, pprims = _run_own("", kernels, monkeypatch)
    assert "rnn_scan" not in pprims and "stack" in pprims
    np.testing.assert_allclose(plain, unrolled, rtol=1e-12, atol=1e-14)


def test_a_declared_cell_bound_to_another_activation_is_unrolled():
    tprog = load_text(OWN_CELL.format(kernel="  kernel rnn_scan").replace(
        "cell = Own,", "cell = Own(; act = relu),"))
    assert "rnn_scan" not in {e.prim for e in lower(tprog, "Seq", 3).eqns}


def test_the_stdlib_cells_declare_their_kernels_and_each_kernel_is_a_primitive():
    from dp.dsl.kernels import SCAN_KERNELS
    from dp.interpreter.core.primitives import PRIMITIVES
    tprog = load_text(TINY_LM)
    assert tprog.defs["SimpleRNN"].kernel == "rnn_scan"
    assert tprog.defs["LSTM"].kernel == "lstm_scan"
    assert tprog.defs["Collapse"].kernel is None
    assert set(SCAN_KERNELS) <= set(PRIMITIVES)


def test_a_cell_that_carries_runs_only_along_a_sequence(tmp_path):
    program = tmp_path / "step.dp"
    program.write_text("Step: (R^6, R^4) -> R^6\nStep(h, x) = LSTM(h, x)\n")
    code, out, err = dp_here("check", str(program))
    assert code == 1
    assert err.startswith("error[type]: LSTM carries c from one step to the next, so it runs "
                          "along a sequence: scan(LSTM, xs)\n"
                          f"  --> {program}:2:14\n")


def test_map_shares_one_set_of_parameters_and_folds_into_the_batch(monkeypatch):
    from dp.interpreter.core import fuse  # the lookup on its own, not fused with its projection
    monkeypatch.setattr(fuse._Fuser, "_embed_linear", lambda self, e: None)
    tprog = load_text(TINY_LM)
    plan = lower(tprog, "Tiny", 3)
    typecheck_plan(plan)
    assert list(plan.params) == [
        "Tiny.languagemodel.embedtoken.E", "Tiny.languagemodel.body.cell.U",
        "Tiny.languagemodel.body.cell.V", "Tiny.languagemodel.body.cell.b",
        "Tiny.languagemodel.generatetoken.W", "Tiny.languagemodel.generatetoken.b"]
    embed = next(e for e in plan.eqns if e.prim == "embed")
    assert embed.out.shape == (15, 4)  # 3 examples x 5 positions, one lookup
    assert plan.outputs[0].shape == (3, 5, 7)


@pytest.mark.parametrize("over", ["seq_mean", "seq_max", "seq_first", "seq_last"])
def test_collapse_reduces_the_sequence_as_asked(over):
    tprog = load_text(f"""
Net: (R^3)^4 -> R^3
Net(xs) = Collapse(xs; over = {over})
""")
    xs = np.random.default_rng(2).normal(size=(2, 4, 3))
    want = {"seq_mean": xs.mean(1), "seq_max": xs.max(1), "seq_first": xs[:, 0],
            "seq_last": xs[:, -1]}[over]
    np.testing.assert_allclose(Model(tprog, "Net", dtype=np.float64).predict(xs), want)


def test_check_shows_the_char_lm_layout():
    code, out, err = dp_here("check", "programs/charlm_rnn.dp", cwd=ROOT)
    assert code == 0, err
    assert ("languagemodel = LanguageModel: Token[103]^64 -> Token[103]^64; d = 64, "
            "body = SequenceRNN") in out
    assert "CharRNN.languagemodel.body.cell.U      R^(128, 128)         16,384" in out
    assert re.search(r"total +44,583\n", out)


def _book(tmp_path, repeats=60) -> str:
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * repeats)
    return str(tmp_path / "book.txt")


LM_PROGRAM = """
Book: Token[{v}]^16 -> Token[{v}]^16
Book(ts) = LanguageModel(ts; body = SequenceRNN(; cell = SimpleRNN, h = 32), d = 16)

train Book on text("book.txt"):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 16; steps {steps}

run:
  print loss(Book, text("book.txt", split = test))
  print baseline(Book, text("book.txt", split = test))
  print generate(Book, "the ", 40; temperature = 0.5, top_k = 3, seed = 7)
"""


def test_a_char_lm_trains_beats_the_unigram_baseline_and_writes_text(tmp_path):
    _book(tmp_path)
    program = tmp_path / "book.dp"
    program.write_text(LM_PROGRAM.format(v=11, steps=150))
    code, out, err = dp_here("train", str(program))
    assert code == 0, err
    loss = float(re.search(r"loss\(Book, .*\) = ([0-9.]+)", out)[1])
    base = float(re.search(r"baseline\(Book, .*\) = ([0-9.]+)", out)[1])
    assert loss < 0.5 * base  # the sentence repeats: context predicts it well
    written = out.rstrip("\n").splitlines()[-1]
    assert written.startswith("the ") and len(written) == 44
    assert set(written) <= set("the cat sat on the mat. ")
    # after loading, the same vocabulary and seed give the same text
    code, again, err = dp_here("run", str(program))
    assert code == 0, err
    assert again.rstrip("\n").splitlines()[-1] == written


def test_a_vocabulary_that_does_not_match_the_model_is_a_data_error(tmp_path):
    _book(tmp_path)
    program = tmp_path / "book.dp"
    program.write_text(LM_PROGRAM.format(v=12, steps=5))
    code, out, err = dp_here("train", str(program))
    assert code == 1
    assert err.startswith("error[data]: Book predicts tokens of a vocabulary of 12, but the "
                          "text has 11 distinct characters\n"
                          f"  --> {program}:5:15\n")
    assert "= note: write Token[11] in Book's signature" in err


def test_generation_refuses_a_character_the_model_never_saw(tmp_path):
    _book(tmp_path)
    program = tmp_path / "book.dp"
    program.write_text(LM_PROGRAM.format(v=11, steps=2).replace('"the ", 40', '"the Z", 4'))
    code, out, err = dp_here("train", str(program))
    assert code == 1
    assert err.startswith("error[data]: the prompt has a character that is not in the "
                          "vocabulary: 'Z' (U+005A) at index 4")
    assert f"\n  --> {program}:11:9\n" in err


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "MyCell"])
def test_digits_read_row_by_row_learn_with_each_cell(tmp_path, cell):
    """SequenceRNN with each cell (fused, fused with a carried memory, unrolled), Collapse."""
    text = (ROOT / "programs/digits_rows_rnn.dp").read_text()
    program = tmp_path / "rows.dp"
    program.write_text(text.replace("cell = SimpleRNN", f"cell = {cell}") + MY_CELL)
    code, out, err = dp_here("train", str(program), "--epochs", "3")
    assert code == 0, err
    acc = float(re.search(r"accuracy\(DigitsRNN, .*\) = ([0-9.]+)", out)[1])
    assert acc >= 0.6


def test_the_char_lm_takes_an_lstm_by_changing_one_word(tmp_path):
    """The reference program with `cell = LSTM`: EmbedToken, GenerateToken and LanguageModel
    train around the gated cell, and it beats the unigram baseline within 40 steps."""
    text = (ROOT / "programs/charlm_rnn.dp").read_text()
    assert text.count("cell: RNN = SimpleRNN") == 1
    program = tmp_path / "charlm_lstm.dp"
    program.write_text(text.replace("cell: RNN = SimpleRNN", "cell: RNN = LSTM")
                       .replace(", 300;", ", 30;"))
    code, out, err = dp_here("train", str(program), "--steps", "40")
    assert code == 0, err
    assert "(118,695 parameters)" in out
    loss = float(re.search(r"loss\(CharRNN, .*\) = ([0-9.]+)", out)[1])
    base = float(re.search(r"baseline\(CharRNN, .*\) = ([0-9.]+)", out)[1])
    assert loss < 0.95 * base


@pytest.mark.slow
def test_digits_rows_rnn_reaches_ninety_percent(tmp_path):
    code, out, err = dp_here("train", "programs/digits_rows_rnn.dp", "--checkpoint",
                             str(tmp_path / "rows.safetensors"), cwd=ROOT)
    assert code == 0, err
    assert float(re.search(r"accuracy\(DigitsRNN, .*\) = ([0-9.]+)", out)[1]) >= 0.90


def test_a_generate_setting_it_does_not_have_is_an_error(tmp_path):
    _book(tmp_path)
    program = tmp_path / "book.dp"
    program.write_text(LM_PROGRAM.format(v=11, steps=2).replace("top_k = 3", "top_p = 3"))
    code, out, err = dp_here("train", str(program))
    assert code == 1
    assert err.startswith("error[name]: generate has no setting 'top_p'; it has temperature, "
                          f"top_k, seed\n  --> {program}:11:")
