"""Character-level text: the pydoc corpus, vocabularies, windows, baseline loss, sampling.

The window tests compare against a copy of the PyTorch reference's NumPy logic (`load_text`,
`lm_batches`, `lm_heldout`), so dp's language models see exactly the reference's data."""

import math
import sys

import numpy as np
import pytest

from dp.dsl.errors import DpError, Span
from dp.interpreter.data.text import (Corpus, Vocab, heldout_windows, lm_batches, pydoc_topics,
                                 read_text, sample, unigram_loss)

SPAN = Span("prog.dp", 2, 3, 2, 9)


# ------------------------------ copies of the PyTorch reference's text handling (NumPy only)
def ref_load_text():
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    text = "\n".join(topics[k] for k in sorted(topics))
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    n_val = len(data) // 10
    return data[:-n_val], data[-n_val:], len(chars)


def ref_lm_batches(train, steps, batch, seq, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(steps):
        starts = rng.randint(0, len(train) - seq - 1, size=batch)
        chunk = train[starts[:, None] + np.arange(seq + 1)]
        out.append((chunk[:, :-1].copy(), chunk[:, 1:].copy()))
    return out


def ref_lm_heldout(val, seq, n_windows=20):
    starts = np.linspace(0, len(val) - seq - 1, n_windows).astype(np.int64)
    chunk = val[starts[:, None] + np.arange(seq + 1)]
    return chunk[:, :-1].copy(), chunk[:, 1:].copy()


def error_of(kind, fn, *args, **kw) -> DpError:
    with pytest.raises(DpError) as info:
        fn(*args, **kw)
    assert info.value.kind == kind, info.value.message
    return info.value


# ------------------------------------------------------------------------------ pydoc topics
def test_pydoc_topics_basic_properties():
    import pydoc_data.topics
    topics = pydoc_data.topics.topics
    text = pydoc_topics()
    assert isinstance(text, str)
    assert text == "\n".join(topics[k] for k in sorted(topics))
    assert text.count("\n") >= len(topics) - 1
    assert len(text) > 100_000
    assert 50 < Vocab.of(text).size < 300
    assert pydoc_topics() == text                     # deterministic


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7),
                    reason="the pydoc topics text changes between Python releases; the bench's "
                           "counts (465,048 chars, 103 distinct) are for CPython 3.11.7")
def test_pydoc_topics_matches_the_bench_counts():
    text = pydoc_topics()
    assert len(text) == 465_048
    assert Vocab.of(text).size == 103


def test_pydoc_corpus_matches_the_reference():
    train, val, v = ref_load_text()
    c = Corpus.of(pydoc_topics())
    assert c.vocab.size == v
    assert c.train_ids.dtype == np.int64 and c.val_ids.dtype == np.int64
    np.testing.assert_array_equal(c.train_ids, train)
    np.testing.assert_array_equal(c.val_ids, val)
    x, y = heldout_windows(c.val_ids, 64)
    rx, ry = ref_lm_heldout(val, 64)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)


# --------------------------------------------------------------------------------- read_text
def test_read_text_reads_utf8_exactly(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("héllo\r\nwörld\n".encode("utf-8"))
    assert read_text(p) == "héllo\r\nwörld\n"          # no newline translation
    p.write_bytes(b"\xef\xbb\xbfabc")
    assert read_text(str(p)) == "abc"                 # the BOM is not text


def test_read_text_missing(tmp_path):
    p = str(tmp_path / "nope.txt")
    err = error_of("data", read_text, p, SPAN)
    assert err.message == f"text file '{p}' does not exist"
    assert err.span == SPAN


def test_read_text_directory(tmp_path):
    err = error_of("data", read_text, str(tmp_path))
    assert err.message == f"text file '{tmp_path}' is a directory, expected a file"
    assert err.span is None


def test_read_text_bad_utf8(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("abc é".encode("latin-1"))
    err = error_of("data", read_text, str(p), SPAN)
    assert err.message == (f"text file '{p}' is not UTF-8 text (invalid byte 0xe9 at byte "
                           f"offset 4); expected a UTF-8 text file")
    assert err.span == SPAN


def test_read_text_empty(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    err = error_of("data", read_text, str(p))
    assert err.message == f"text file '{p}' is empty; expected at least one character of text"
    p.write_bytes(b"\xef\xbb\xbf")                    # only a BOM is empty too
    assert "is empty" in error_of("data", read_text, str(p)).message


# ------------------------------------------------------------------------------------- vocab
def test_vocab_is_the_sorted_set():
    v = Vocab.of("hello world")
    assert v.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert v.size == len(v) == 8
    ids = v.encode("hello")
    assert ids.dtype == np.int64
    assert ids.tolist() == [3, 2, 4, 4, 5]
    assert v.decode(ids) == "hello"
    assert v.decode([]) == ""
    assert v.encode("").shape == (0,)


def test_vocab_encode_matches_a_dict_lookup_on_pydoc():
    text = pydoc_topics()[:50_000]
    v = Vocab.of(text)
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    np.testing.assert_array_equal(v.encode(text), [stoi[c] for c in text])
    assert v.decode(v.encode(text)) == text


def test_vocab_json_round_trip():
    text = 'a "quoted"\n\ttab \\ back\u00e9\u2014\U0001F600'
    v = Vocab.of(text)
    s = v.to_json()
    assert s.isascii()                                # safe in any string metadata
    w = Vocab.from_json(s)
    assert w == v and w.chars == v.chars
    np.testing.assert_array_equal(w.encode(text), v.encode(text))
    assert w.decode(v.encode(text)) == text


def test_vocab_from_json_keeps_the_stored_order():
    w = Vocab.from_json('["b", "a", "c"]')
    assert w.encode("abc").tolist() == [1, 0, 2]
    assert w.decode([0, 1, 2]) == "bac"


@pytest.mark.parametrize("stored, why", [
    ("[\"a\", ", "not valid JSON"),
    ('{"a": 0}', "expected a JSON list of characters, got dict"),
    ("[]", "the list is empty"),
    ('["a", 1]', "entry 1 is 1, not a string"),
    ('["a", null]', "entry 1 is null, not a string"),
    ('["a", "bc"]', "entry 1 is 'bc', expected exactly one character"),
    ('["a", ""]', "entry 1 is '', expected exactly one character"),
    ('["a", "b", "a"]', "character 'a' appears twice (entries 0 and 2)"),
])
def test_vocab_from_json_rejects_malformed(stored, why):
    err = error_of("checkpoint", Vocab.from_json, stored, "checkpoint 'm.safetensors'")
    assert err.message.startswith("the character vocabulary stored in checkpoint "
                                  "'m.safetensors' is malformed: ")
    assert why in err.message


def test_vocab_encode_unknown_character():
    v = Vocab.of("abc")
    err = error_of("data", v.encode, "cab\u00e9a", SPAN, "the prompt")
    assert err.message == ("the prompt has a character that is not in the vocabulary: "
                           "'é' (U+00E9) at index 3 (counting from 0); the vocabulary has 3 "
                           "characters")
    assert err.span == SPAN and err.notes == ()
    err = error_of("data", v.encode, "a\nxyz")
    assert err.message.startswith("the text has a character that is not in the vocabulary: "
                                  "'\\n' (U+000A) at index 1")
    assert err.notes == ("4 distinct characters are not in the vocabulary: '\\n' 'x' 'y' 'z'",)


def test_vocab_decode_rejects_out_of_range():
    v = Vocab.of("abc")
    with pytest.raises(ValueError, match="token id 3 at index 1"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="token id -1"):
        v.decode([-1])


def test_vocab_of_empty_text():
    assert "empty" in error_of("data", Vocab.of, "").message


# ------------------------------------------------------------------------------------ corpus
@pytest.mark.parametrize("n", [10, 19, 20, 101, 1000])
def test_corpus_split_sizes(n):
    text = ("abcdefghij" * 200)[:n - 1] + "Z"          # Z only in the held-out part
    c = Corpus.of(text)
    assert len(c.val_ids) == n // 10
    assert len(c.train_ids) == n - n // 10
    assert c.vocab == Vocab.of(text)                  # vocabulary of the WHOLE text
    assert c.vocab.chars[0] == "Z"
    assert c.val_ids[-1] == 0
    assert 0 not in c.train_ids
    np.testing.assert_array_equal(np.concatenate([c.train_ids, c.val_ids]),
                                  c.vocab.encode(text))


def test_corpus_short_text_holds_nothing_out():
    c = Corpus.of("abcab")
    assert c.train_ids.tolist() == [0, 1, 2, 0, 1] and len(c.val_ids) == 0


def test_corpus_with_a_given_vocab():
    v = Vocab.of("abcdefghij")
    c = Corpus.of("jihgfedcba", vocab=v)
    assert c.vocab is v and c.train_ids.tolist() == list(range(9, 0, -1))
    assert "'z'" in error_of("data", Corpus.of, "abz", vocab=v).message


# ----------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("batch, seq, seed", [(32, 64, 0), (3, 5, 7), (1, 1, 1)])
def test_lm_batches_identical_to_the_reference(batch, seq, seed):
    train = np.random.RandomState(123).randint(0, 50, size=1000).astype(np.int64)
    ref = ref_lm_batches(train, 6, batch, seq, seed)
    gen = lm_batches(train, batch, seq, seed)
    for rx, ry in ref:
        x, y = next(gen)
        assert x.dtype == np.int64 and y.dtype == np.int64
        assert x.shape == y.shape == (batch, seq)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_lm_batches_on_the_pydoc_text_match_the_reference():
    train, _, _ = ref_load_text()
    gen = lm_batches(Corpus.of(pydoc_topics()).train_ids, 32, 64)
    for rx, ry in ref_lm_batches(train, 3, 32, 64):
        x, y = next(gen)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)


def test_lm_batches_is_infinite_and_in_range():
    # starts 0..6: randint's high (10 - 2 - 1 = 7) is exclusive, so the last window that
    # fits (start 7, targets up to index 9) is never drawn, as in the reference
    train = np.arange(10, dtype=np.int64)
    gen = lm_batches(train, 4, 2)
    seen = set()
    for _ in range(500):
        x, y = next(gen)
        seen.update(x[:, 0].tolist())
        np.testing.assert_array_equal(y, x + 1)
    assert seen == set(range(7))


def test_lm_batches_too_short():
    err = error_of("data", lm_batches, np.arange(65), 32, 64, span=SPAN)
    assert err.message.startswith("the training text has 65 characters, too few for windows "
                                  "of 64: expected at least 66")
    assert err.span == SPAN
    lm_batches(np.arange(66), 32, 64)                 # just enough
    assert "batch size" in error_of("usage", lm_batches, np.arange(100), 0, 4).message
    assert "sequence length" in error_of("usage", lm_batches, np.arange(100), 2, 1.5).message


def test_heldout_windows():
    val = np.arange(100, dtype=np.int64)
    x, y = heldout_windows(val, 10, 5)
    starts = [0, 22, 44, 66, 89]                      # linspace(0, 89, 5) truncated
    assert x[:, 0].tolist() == starts
    np.testing.assert_array_equal(x, np.array(starts)[:, None] + np.arange(10))
    np.testing.assert_array_equal(y, x + 1)
    assert y[-1, -1] == 99                            # the last window reaches the end
    rx, ry = ref_lm_heldout(val, 10, 5)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    x, y = heldout_windows(val, 99)                   # 20 windows, all starting at 0
    assert x.shape == (20, 99) and (x[:, 0] == 0).all()
    err = error_of("data", heldout_windows, val, 100)
    assert err.message.startswith("the held-out text has 100 characters, too few for a "
                                  "window of 100: expected at least 101")


# ------------------------------------------------------------------------------ unigram loss
def test_unigram_loss_by_hand():
    # train "aab" over V = 3 ({a, b, c}): counts 2, 1, 0 -> +1 -> 3, 2, 1 over 6
    train = np.array([0, 0, 1])
    y = np.array([[0, 2], [1, 0]])
    want = -(math.log(3 / 6) + math.log(1 / 6) + math.log(2 / 6) + math.log(3 / 6)) / 4
    assert unigram_loss(train, y, 3) == pytest.approx(want, rel=1e-12)
    assert isinstance(unigram_loss(train, y, 3), float)


def test_unigram_loss_uniform_and_bounds():
    train = np.arange(4).repeat(5)                    # uniform: loss is log V on anything
    assert unigram_loss(train, np.array([3, 1, 1]), 4) == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        unigram_loss(train, np.array([4]), 4)
    with pytest.raises(ValueError):
        unigram_loss(train, np.array([], dtype=np.int64), 4)


def test_unigram_loss_on_pydoc_is_a_sane_baseline():
    c = Corpus.of(pydoc_topics())
    _, y = heldout_windows(c.val_ids, 64)
    loss = unigram_loss(c.train_ids, y, c.vocab.size)
    assert 2.0 < loss < math.log(c.vocab.size)       # better than uniform, worse than a model


# ------------------------------------------------------------------------------------ sample
def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def test_sample_greedy():
    s = np.array([0.1, 3.0, -2.0, 3.0])
    assert sample(s, temperature=0) == 1              # first of the tied maxima
    assert sample(s, temperature=0.0, top_k=3) == 1
    assert isinstance(sample(s, 0), int)


def test_sample_top_k_1_is_argmax():
    rng = np.random.default_rng(0)
    s = np.random.default_rng(1).normal(size=50)
    for t in (0.1, 1.0, 100.0):
        assert all(sample(s, t, 1, rng) == int(np.argmax(s)) for _ in range(50))
    tied = np.array([1.0, 5.0, 5.0, 5.0])
    assert {sample(tied, 1.0, 1, rng) for _ in range(50)} == {1}


def test_sample_seeded_rng_is_reproducible():
    s = np.random.default_rng(2).normal(size=30)
    a = [sample(s, 0.8, 0, np.random.default_rng(7)) for _ in range(5)]
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    d1 = [sample(s, 0.8, 5, r1) for _ in range(200)]
    d2 = [sample(s, 0.8, 5, r2) for _ in range(200)]
    assert d1 == d2
    assert len(set(a)) == 1                           # same seed, same first draw
    assert len(set(d1)) > 1                           # but it is random


def chi_square(counts, p):
    expected = np.asarray(p) * sum(counts)
    return float(((np.asarray(counts) - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_sample_follows_softmax_of_scores_over_temperature(t):
    s = np.array([1.0, 2.0, 0.5, -1.0, 0.0])
    rng = np.random.default_rng(11)
    n = 20_000
    counts = np.bincount([sample(s, t, 0, rng) for _ in range(n)], minlength=5)
    p = softmax(s / t)
    # 4 degrees of freedom: chi2 > 30 has probability ~5e-6
    assert chi_square(counts, p) < 30, (counts, p * n)
    # and it is not the distribution of another temperature
    other = softmax(s / (t * 2))
    assert chi_square(counts, other) > 100


def test_sample_top_k_renormalizes_over_the_top_k():
    s = np.array([0.0, 2.0, 1.0, 3.0, -1.0, 2.5])
    rng = np.random.default_rng(3)
    n = 20_000
    draws = [sample(s, 1.0, 3, rng) for _ in range(n)]
    assert set(draws) == {1, 3, 5}                    # never outside the top 3
    counts = np.bincount(draws, minlength=6)[[1, 3, 5]]
    assert chi_square(counts, softmax(s[[1, 3, 5]])) < 25


def test_sample_top_k_never_outside_the_top_k():
    rng = np.random.default_rng(5)
    for trial in range(200):
        s = rng.normal(size=20) * 3
        s[rng.integers(0, 20, size=5)] = 1.0          # ties, sometimes at the cutoff
        k = int(rng.integers(1, 8))
        allowed = set(np.argsort(-s, kind="stable")[:k].tolist())
        for _ in range(10):
            assert sample(s, 2.0, k, rng) in allowed
    ties = np.array([0.0, 1.0, 1.0, 1.0, 1.0])        # cutoff inside a tie: the first ids
    assert {sample(ties, 1.0, 2, rng) for _ in range(200)} == {1, 2}


def test_sample_top_k_larger_than_v_is_all():
    s = np.zeros(3)
    rng = np.random.default_rng(0)
    assert {sample(s, 1.0, 10, rng) for _ in range(200)} == {0, 1, 2}


def test_sample_is_numerically_stable():
    rng = np.random.default_rng(0)
    big = np.array([1e300, -1e300, 1e300 - 1e285])
    assert sample(big, 1.0, 0, rng) in (0, 2)
    s = np.array([1000.0, 999.0, -np.inf])
    assert sample(s, 1e-300, 0, rng) == 0             # tiny temperature: no overflow
    draws = [sample(s, 1.0, 0, rng) for _ in range(500)]
    assert 2 not in draws and {0, 1} == set(draws)


@pytest.mark.parametrize("kw, match", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
])
def test_sample_validates(kw, match):
    with pytest.raises(ValueError, match=match):
        sample(np.zeros(3), rng=np.random.default_rng(0), **kw)


def test_sample_validates_scores_and_rng():
    with pytest.raises(ValueError, match="rng"):
        sample(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        sample(np.array([0.0, np.nan]), 0)
    with pytest.raises(ValueError, match="-inf"):
        sample(np.array([-np.inf, -np.inf]), 1.0, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        sample(np.zeros((2, 2)), 0)
