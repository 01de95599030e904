"""Masked text (BERT's task) and sequence to sequence with `previous` (issue 5): the data, the
loss over the scored positions, teacher forcing, greedy generation, and training."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl import load_text, parse
from dp.dsl.check_sources import check_source
from dp.dsl.errors import DpError
from dp.interpreter.core.model import Model
from dp.interpreter.data import tasks, text
from dp.interpreter.data.sources import dataset
from gradcheck import numeric_grad


def parse_source(source: str):
    """One data source, as a run block's print reads it, checked by its rules."""
    program = parse(f"run:\n  print {source}\n", "expr.dp")
    return check_source(program.items[0].prints[0].exprs[0])

TINY_S2S = """
Swap: Token[6]^4 -> Token[6]^3
Swap(ts) = SequenceToSequence(ts; d = 8, layers = 1, heads = 2, ff = 8)
"""


def _model(source: str, name: str, seed: int = 0) -> Model:
    model = Model(load_text(source), name, dtype=np.float64)
    model.init(seed)
    return model


def test_sequence_to_sequence_gradient_matches_central_differences():
    """Encoder, decoder with causal self-attention and cross-attention, `previous` from the
    targets (teacher forcing): every parameter's gradient, end to end, in float64."""
    model = _model(TINY_S2S, "Swap")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 6, (3, 4)), rng.integers(0, 6, (3, 3))
    model.loss_and_grad("cross_entropy", x, y)
    np.testing.assert_allclose(model.grad_flat, numeric_grad(model, "cross_entropy", x, y),
                               rtol=1e-5, atol=1e-7)


def test_teacher_forcing_feeds_the_targets_one_later():
    model = _model(TINY_S2S, "Swap")
    x, y = np.array([[1, 2, 3, 4]]), np.array([[5, 1, 2]])
    _, prev, _ = model._inputs(x, y)
    np.testing.assert_array_equal(prev, [[0, 5, 1]])


def test_the_decoder_does_not_look_ahead():
    """The scores at position t depend on previous[:t + 1] only: changing a later token of
    `previous` changes no earlier position's scores."""
    model = _model(TINY_S2S, "Swap")
    ex = model._executable(2, None)
    x = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])
    a = ex.outputs(ex.forward(x, np.array([[0, 1, 2], [0, 3, 3]])))[0].copy()
    b = ex.outputs(ex.forward(x, np.array([[0, 1, 5], [0, 3, 1]])))[0]
    np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-12, atol=1e-12)
    assert np.abs(a[:, 2] - b[:, 2]).max() > 1e-6


def test_predict_writes_greedily_one_token_at_a_time():
    """predict feeds back its own most likely tokens: the result equals running the plan with
    those tokens as `previous`, and each is the argmax where it was written."""
    model = _model(TINY_S2S, "Swap", seed=3)
    x = np.random.default_rng(2).integers(0, 6, (5, 4))
    scores = model.predict(x)
    written = scores.argmax(axis=-1)
    prev = np.zeros_like(written)
    prev[:, 1:] = written[:, :-1]
    ex = model._executable(5, None)
    np.testing.assert_allclose(ex.outputs(ex.forward(x, prev))[0], scores, rtol=1e-12)


def test_previous_in_an_inner_module_must_give_the_output():
    """`previous` of a module whose output is not the model's would have no values."""
    tprog = load_text("""
Inner: Token[5]^4 -> Token[5]^4
Inner(ts) = map(GenerateToken, map(EmbedToken(; d = 8), previous))

Net: Token[5]^4 -> Token[5]^4
Net(ts) = Inner(ts)
""")
    assert Model(tprog, "Net").feedback


def test_reversal_data():
    train = tasks.reversal("train", (8,), None)
    test = tasks.reversal("test", (8,), None)
    assert train.x.shape == (20_000, 8) and len(test) >= 999
    np.testing.assert_array_equal(test.y, test.x[:, ::-1])
    assert train.x.min() == 1 and train.x.max() == 10  # 0 is the start token
    assert not {r.tobytes() for r in test.x} & {r.tobytes() for r in train.x}
    assert tasks.VOCAB.decode(test.x[0]).isdigit()
    with pytest.raises(DpError, match="reversal has the splits train and test, not 'dev'"):
        tasks.reversal("dev", (8,), None)


REVERSE = """
Reverse: Token[11]^6 -> Token[11]^6
Reverse(ts) = SequenceToSequence(ts; d = 32, layers = 1, heads = 4, ff = 64)

train Reverse on reversal(split = train):
  loss cross_entropy; optimizer adamw(lr = 0.005); batch 64; steps 300

run:
  print exact_match(Reverse, reversal(split = test))
  print accuracy(Reverse, reversal(split = test))
  print predict(Reverse, reversal(split = test), 2)
"""


def test_sequence_to_sequence_learns_to_reverse(tmp_path):
    """SequenceToSequence, DecoderBlock, repeat with a memory, teacher forcing in training and
    greedy writing when run: most held-out strings come out exactly reversed."""
    program = tmp_path / "reverse.dp"
    program.write_text(REVERSE)
    code, out, err = dp_here("train", str(program))
    assert code == 0, err
    exact = float(re.search(r"exact_match\(Reverse, .*\) = ([0-9.]+)", out)[1])
    assert exact >= 0.9, out
    shown = re.findall(r"'(\d+)'\n  -> '(\d+)'\n  \(true '(\d+)'\)", out)
    assert len(shown) == 2 and all(t == x[::-1] for x, _, t in shown), out


def test_mask_windows_hide_a_share_and_score_only_those():
    x = np.arange(20000).reshape(100, 200) % 7
    masked, y = text.mask_windows(x, 0.15, 9, np.random.RandomState(0))
    hidden = masked == 9
    assert 0.13 < hidden.mean() < 0.17
    np.testing.assert_array_equal(y[hidden], x[hidden])
    assert (y[~hidden] == -1).all() and (masked[~hidden] == x[~hidden]).all()


def test_masked_text_has_the_mask_token_and_fixed_held_out_masks(tmp_path):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 40)
    e = parse_source('text("book.txt", split = test, mask = 0.2)')
    a, b = dataset(e, str(tmp_path), (16,)), dataset(e, str(tmp_path), (16,))
    assert a.vocab.size == 12 and text.MASK in a.vocab.chars
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.x == a.corpus.mask_id).sum() == (a.y >= 0).sum() > 0


@pytest.mark.parametrize("source, words", [
    ('text("book.txt", mask = 1.5)', "text mask must be a share of the characters, at least 0 "
                                     "and below 1 (such as 0.15), but it is 1.5"),
    ('text("marked.txt", mask = 0.15)', "contains '\u2588' (U+2588), which stands for a masked"),
])
def test_masked_text_errors(tmp_path, source, words):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 40)
    (tmp_path / "marked.txt").write_text("a \u2588 block " * 40)
    with pytest.raises(DpError, match=re.escape(words)):
        dataset(parse_source(source), str(tmp_path), (16,))


def test_cross_entropy_of_masked_text_is_the_mean_over_hidden_characters():
    """The loss a model reports on masked text is the mean over the hidden positions only."""
    model = _model("""
Fill: Token[6]^5 -> Token[6]^5
Fill(ts) = map(GenerateToken, BERT(ts; d = 8, layers = 1, heads = 2, ff = 8))
""", "Fill")
    x = np.array([[1, 5, 2, 5, 3], [5, 0, 1, 2, 4]])
    y = np.array([[-1, 4, -1, 0, -1], [2, -1, -1, -1, -1]])
    scores = model.predict(x)
    logp = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
    want = -np.mean([logp[0, 1, 4], logp[0, 3, 0], logp[1, 0, 2]])
    assert model.loss("cross_entropy", x, y) == pytest.approx(want, rel=1e-12)


BERT_BOOK = """
Fill: Token[16]^8 -> Token[16]^8
Fill(ts) = map(GenerateToken, BERT(ts; d = 32, layers = 1, heads = 2, ff = 64))

train Fill on text("book.txt", mask = 0.15):
  loss cross_entropy; optimizer adamw(lr = 0.005); batch 16; steps 400

run:
  print accuracy(Fill, text("book.txt", split = test, mask = 0.15))
  print baseline(Fill, text("book.txt", split = test, mask = 0.15))
  print predict(Fill, text("book.txt", split = test, mask = 0.15), 3)
"""


def test_bert_learns_to_fill_in_masked_characters(tmp_path):
    """BERT (EmbedToken, Positions, TransformerBlock) with GenerateToken on masked text beats
    always guessing the most frequent character by far, and shows what it filled in."""
    (tmp_path / "book.txt").write_text("the cat sat on the mat. a dog ran to the log. " * 30)
    program = tmp_path / "fill.dp"
    program.write_text(BERT_BOOK)
    code, out, err = dp_here("train", str(program))
    assert code == 0, err
    acc = float(re.search(r"accuracy\(Fill, .*\) = ([0-9.]+)", out)[1])
    base = re.search(r"baseline\(Fill, .*\) = ([0-9.]+) nats/char; always ' ': accuracy "
                     r"([0-9.]+)", out)
    assert acc > 0.7 > 2 * float(base[2]), out
    assert "\u2588" in out.split("predict(")[1], out


def test_a_model_trained_without_masks_cannot_read_masked_text(tmp_path):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 40)
    program = tmp_path / "lm.dp"
    program.write_text("""
Book: Token[11]^8 -> Token[11]^8
Book(ts) = map(GenerateToken, BERT(ts; d = 8, layers = 1, heads = 2, ff = 8))

train Book on text("book.txt"):
  loss cross_entropy; optimizer adamw(lr = 0.01); batch 4; steps 2

run:
  print accuracy(Book, text("book.txt", split = test, mask = 0.15))
""")
    code, out, err = dp_here("train", str(program))
    assert code == 1
    assert "error[data]: the model was trained without the mask token '\u2588'" in err


def test_the_programs_check():
    for name in ("bert_masked", "seq2seq_reverse"):
        code, out, err = dp_here("check", f"programs/{name}.dp", cwd=ROOT)
        assert code == 0, err
