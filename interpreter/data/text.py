"""Character-level text for language models: corpora, vocabularies, windows and sampling.

Everything here is NumPy and draws the text, the windows and the held-out sample exactly as
the PyTorch reference of the rnn_charlm and transformer_charlm workloads does
(benchmarks/README.md; tests/test_text.py holds a copy of its logic), so that a dp language
model and the reference see the same characters, the same training windows and the same
held-out sample. A problem a user can cause (a missing or non-UTF-8 file, a prompt with a character
the model never saw, a text too short for the window) is a `DpError('data', ...)`; a
malformed vocabulary read back from a checkpoint is a `DpError('checkpoint', ...)`.

    pydoc_topics()                       the bench's text: CPython's pydoc_data topics
    read_text(path)                      a UTF-8 text file
    Vocab.of(text)                       the sorted set of characters; encode / decode / json
    Corpus.of(text)                      train / held-out ids (last len // 10 held out)
    lm_batches(train_ids, batch, seq)    infinite random training windows (x, y)
    heldout_windows(val_ids, seq)        the fixed, evenly spaced held-out windows (x, y)
    mask_windows(x, rate, mask_id, rng)  BERT's task: hide characters, score only those
    unigram_loss(train_ids, y, V)        the baseline cross-entropy a model must beat
    sample(scores, temperature, top_k)   one token from a score vector
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from dp.dsl.errors import DpError, Span

__all__ = ["pydoc_topics", "read_text", "Vocab", "Corpus", "lm_batches", "heldout_windows",
           "mask_windows", "unigram_loss", "sample", "MASK"]

MASK = "\u2588"  # the mask token of masked text, a full block: "The qu\u2588ck"


# --------------------------------------------------------------------------------------------
# texts
# --------------------------------------------------------------------------------------------
def pydoc_topics() -> str:
    """The bench's language-model text, `"\\n".join(topics[k] for k in sorted(topics))`.

    It ships with CPython (`pydoc_data.topics`), so nothing is downloaded; its content depends
    on the Python release (3.11.7: 465,048 characters, 103 distinct)."""
    try:
        import pydoc_data.topics
    except ImportError as e:
        raise DpError("data", f"this Python has no pydoc_data.topics module ({e}); the pydoc "
                              f"text ships with CPython's standard library, which this "
                              f"installation has stripped") from None
    topics = pydoc_data.topics.topics
    return "\n".join(topics[k] for k in sorted(topics))


def read_text(path: str | os.PathLike, span: Span | None = None) -> str:
    """A whole UTF-8 text file as one string, characters exactly as stored.

    Line endings are not translated (a language model should see the file's own characters);
    a leading byte-order mark is not text and is dropped. Every problem is a
    `DpError('data', ...)` naming the file, never an OSError or UnicodeDecodeError."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DpError("data", f"text file '{p}' does not exist", span)
    if os.path.isdir(p):
        raise DpError("data", f"text file '{p}' is a directory, expected a file", span)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DpError("data", f"text file '{p}' cannot be read ({e.strerror or e})",
                      span) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DpError("data", f"text file '{p}' is not UTF-8 text (invalid byte 0x"
                              f"{raw[e.start]:02x} at byte offset {e.start}); expected a "
                              f"UTF-8 text file", span) from None
    if not text:
        raise DpError("data", f"text file '{p}' is empty; expected at least one character "
                              f"of text", span)
    return text


def _code_points(text: str) -> np.ndarray:
    """The characters of `text` as uint32 code points, without a Python-level loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


# --------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocab:
    """A character vocabulary: id i is `chars[i]`.

    `Vocab.of(text)` is the sorted set of the text's characters, as the bench builds it
    (`sorted(set(text))`); `from_json` gives back exactly the mapping `to_json` stored, so
    a checkpoint's model reads and writes the characters it was trained on."""

    chars: tuple[str, ...]
    # lookup tables for encode: code points sorted, and the id of each
    _points: np.ndarray = field(init=False, repr=False, compare=False)
    _ids: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"a vocabulary entry must be one character, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("a vocabulary has duplicate characters")
        points = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(points, kind="stable")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "_points", points[order])
        object.__setattr__(self, "_ids", order.astype(np.int64))

    @classmethod
    def of(cls, text: str, span: Span | None = None) -> "Vocab":
        """The sorted set of the characters of `text` (the bench's vocabulary)."""
        if not text:
            raise DpError("data", "the text is empty, so it has no characters for a "
                                  "vocabulary; expected at least one character", span)
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, span: Span | None = None, what: str = "the text"
               ) -> np.ndarray:
        """Character ids, int64 [len(text)].

        A character outside the vocabulary (a generation prompt with a character the model
        never saw) is a `DpError('data', ...)` naming the first one and its index; `what`
        says what the text is in that message ("the prompt")."""
        cps = _code_points(text)
        if cps.size == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self._points, cps)
        pos_c = np.minimum(pos, len(self._points) - 1)
        known = (self._points[pos_c] == cps) if len(self._points) else np.zeros(cps.shape, bool)
        if not known.all():
            i = int(np.argmin(known))
            c = text[i]
            missing = sorted({text[j] for j in np.flatnonzero(~known)})
            notes = ()
            if len(missing) > 1:
                shown = " ".join(repr(m) for m in missing[:20])
                more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
                notes = ((f"{len(missing)} distinct characters are not in the vocabulary: "
                          f"{shown}{more}"),)
            raise DpError("data", f"{what} has a character that is not in the vocabulary: "
                                  f"{c!r} (U+{ord(c):04X}) at index {i} (counting from 0); "
                                  f"the vocabulary has {self.size} characters", span, notes)
        return self._ids[pos_c]

    def decode(self, ids) -> str:
        """The text of a sequence of ids (ValueError for an id outside 0..size-1)."""
        a = np.asarray(ids)
        if a.size == 0:
            return ""
        if a.dtype.kind not in "iu":
            raise ValueError(f"token ids must be integers, got dtype {a.dtype}")
        a = a.reshape(-1)
        bad = (a < 0) | (a >= self.size)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"token id {int(a[i])} at index {i} is outside the vocabulary "
                             f"(0..{self.size - 1})")
        return "".join([self.chars[int(i)] for i in a])

    def to_json(self) -> str:
        """The mapping as a JSON list of characters (ASCII-only, `\\u` escapes), id = index."""
        return json.dumps(list(self.chars))

    @classmethod
    def from_json(cls, s: str, where: str = "the checkpoint", span: Span | None = None
                  ) -> "Vocab":
        """The vocabulary `to_json` stored; anything else is a `DpError('checkpoint', ...)`.

        `where` names the file in the message. The order is kept as stored (it is the id
        mapping the model was trained with), but it must be a list of distinct characters."""
        def bad(why: str) -> DpError:
            return DpError("checkpoint", f"the character vocabulary stored in {where} is "
                                         f"malformed: {why}", span)
        if not isinstance(s, str):
            raise bad(f"expected a JSON string, got {type(s).__name__}")
        try:
            chars = json.loads(s)
        except (ValueError, RecursionError) as e:
            raise bad(f"not valid JSON ({e})") from None
        if not isinstance(chars, list):
            raise bad(f"expected a JSON list of characters, got {type(chars).__name__}")
        if not chars:
            raise bad("the list is empty; expected at least one character")
        for i, c in enumerate(chars):
            if not isinstance(c, str):
                raise bad(f"entry {i} is {json.dumps(c)[:40]}, not a string")
            if len(c) != 1:
                raise bad(f"entry {i} is {c[:20]!r}, expected exactly one character")
        seen: dict[str, int] = {}
        for i, c in enumerate(chars):
            if c in seen:
                raise bad(f"character {c!r} appears twice (entries {seen[c]} and {i})")
            seen[c] = i
        return cls(tuple(chars))


# --------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Corpus:
    """A text as ids: training ids, held-out ids (the last `len(text) // 10` characters, as
    the bench holds them out) and the vocabulary of the WHOLE text (as the bench builds it,
    so a character seen only in the held-out part still has an id)."""

    train_ids: np.ndarray
    val_ids: np.ndarray
    vocab: Vocab
    name: str = ""

    @classmethod
    def of(cls, text: str, vocab: Vocab | None = None, name: str = "",
           span: Span | None = None) -> "Corpus":
        """Split `text`; with `vocab` (a checkpoint's), encode with it instead of building one.

        A text shorter than 10 characters holds nothing out (`len // 10 == 0`; the bench's
        `data[:-0]` would instead leave no training data)."""
        if not text:
            raise DpError("data", f"the text{f' {name!r}' if name else ''} is empty; "
                                  f"expected at least one character", span)
        vocab = vocab if vocab is not None else Vocab.of(text, span)
        ids = vocab.encode(text, span)
        ids.flags.writeable = False
        n_train = len(ids) - len(ids) // 10
        return cls(ids[:n_train], ids[n_train:], vocab, name)

    @classmethod
    def masked(cls, text: str, vocab: Vocab | None = None, name: str = "",
               span: Span | None = None) -> "Corpus":
        """The corpus of a masked-text task: the vocabulary has the mask token too."""
        if MASK in text:
            raise DpError("data", f"the text{f' {name!r}' if name else ''} contains "
                                  f"{MASK!r} (U+{ord(MASK):04X}), which stands for a masked "
                                  f"character in masked text", span)
        if vocab is not None and MASK not in vocab.chars:
            raise DpError("data", f"the model was trained without the mask token {MASK!r}, "
                                  f"so it cannot read masked text", span)
        return cls.of(text, vocab or Vocab.of(text + MASK, span), name, span)

    @property
    def mask_id(self) -> int:
        return self.vocab.chars.index(MASK)


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------
def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DpError("usage", f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _ids(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a 1-D array of integer ids, got {a.dtype} "
                         f"{list(a.shape)}")
    return a.astype(np.int64, copy=False)


def lm_batches(train_ids, batch: int, seq: int, seed: int = 0, span: Span | None = None,
               rng: np.random.RandomState | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Random training windows forever: (x, y), both int64 [batch, seq], y = x shifted by one.

    Each step draws `starts = rng.randint(0, len(train) - seq - 1, size=batch)` from one
    `np.random.RandomState(seed)` stream, exactly as the PyTorch reference's `lm_batches`, so
    step k sees the reference's k-th batch. (So the last possible window, starting at
    len - seq - 1, is never drawn: that is the reference's choice, kept.) Sizes are checked
    here, at the call; windows are drawn one step per `next`. A given `rng` replaces the
    seed's (so that its state can be saved and restored)."""
    batch = _positive(batch, "batch size")
    seq = _positive(seq, "sequence length")
    ids = _ids(train_ids, "training ids")
    if len(ids) < seq + 2:
        raise DpError("data", f"the training text has {len(ids)} characters, too few for "
                              f"windows of {seq}: expected at least {seq + 2} (a window of "
                              f"{seq} inputs, its targets one further, and a choice of start)",
                      span)
    return _windows_forever(ids, batch, seq, rng or np.random.RandomState(seed))


def _windows_forever(ids, batch, seq, rng):
    offsets = np.arange(seq + 1)
    high = len(ids) - seq - 1
    while True:
        starts = rng.randint(0, high, size=batch)
        chunk = ids[starts[:, None] + offsets]
        yield chunk[:, :-1].copy(), chunk[:, 1:].copy()


def heldout_windows(val_ids, seq: int, n_windows: int = 20, span: Span | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed held-out sample: (x, y) int64 [n_windows, seq] at evenly spaced starts
    `np.linspace(0, len(val) - seq - 1, n_windows).astype(int)`, as torch_ref.py
    `lm_heldout`; the same windows every evaluation, so losses compare across runs."""
    seq = _positive(seq, "sequence length")
    n_windows = _positive(n_windows, "number of held-out windows")
    ids = _ids(val_ids, "held-out ids")
    if len(ids) < seq + 1:
        raise DpError("data", f"the held-out text has {len(ids)} characters, too few for a "
                              f"window of {seq}: expected at least {seq + 1} (the held-out "
                              f"part is the last tenth of the text)", span)
    starts = np.linspace(0, len(ids) - seq - 1, n_windows).astype(np.int64)
    chunk = ids[starts[:, None] + np.arange(seq + 1)]
    return chunk[:, :-1].copy(), chunk[:, 1:].copy()


def mask_windows(x, rate: float, mask_id: int, rng: np.random.RandomState
                 ) -> tuple[np.ndarray, np.ndarray]:
    """BERT's task on windows x: each position is hidden with probability `rate` (replaced by
    the mask token); the targets are the hidden characters, and -1 (not scored) elsewhere."""
    x = np.asarray(x)
    hidden = rng.random_sample(x.shape) < rate
    return np.where(hidden, mask_id, x), np.where(hidden, x, -1)


def unigram_loss(train_ids, y, vocab_size: int) -> float:
    """Cross-entropy (nats per character) of `y` under the training ids' character frequencies.

    The baseline a language model must beat: a model that ignores context entirely. Counts
    are add-one smoothed, `p(c) = (count(c) + 1) / (len(train) + V)`, so a character never seen
    in training costs a finite amount."""
    v = int(vocab_size)
    if v <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size!r}")
    tr = _ids(train_ids, "training ids")
    yy = np.asarray(y).reshape(-1)
    if yy.size == 0:
        raise ValueError("no targets to evaluate")
    yy = _ids(yy, "targets")
    for a, what in ((tr, "training ids"), (yy, "targets")):
        if a.size and (a.min() < 0 or a.max() >= v):
            raise ValueError(f"{what} must lie in 0..{v - 1}")
    counts = np.bincount(tr, minlength=v).astype(np.float64) + 1.0
    logp = np.log(counts) - math.log(len(tr) + v)
    return float(-logp[yy].mean())


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
def sample(scores, temperature: float = 1.0, top_k: int = 0,
           rng: np.random.Generator | None = None) -> int:
    """One token id from a score (logit) vector [V].

    temperature == 0 is greedy: the argmax (the first one on ties). Otherwise the id is drawn
    from softmax(scores / temperature), restricted to the `top_k` highest scores when
    top_k > 0 (on ties at the cutoff exactly k are kept, the lowest ids first), with `rng`,
    which is required so that generation is reproducible. -inf scores are allowed (never
    drawn); NaN and +inf are not. Bad arguments are ValueErrors for the caller to report."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D vector, got shape {list(s.shape)}")
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("scores must not contain NaN or +inf")
    if not np.isfinite(s).any():
        raise ValueError("all scores are -inf; nothing can be sampled")
    if isinstance(temperature, bool):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number, got {temperature!r}") from None
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
    if t == 0:
        return int(np.argmax(s))
    if rng is None:
        raise ValueError("sampling at temperature > 0 needs an rng (np.random.Generator)")

    if 0 < top_k < s.size:
        keep = np.sort(np.argsort(-s, kind="stable")[:top_k])
    else:
        keep = np.arange(s.size)
    z = s[keep]
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        z = (z - z.max()) / t               # <= 0, the max is exactly 0: exp cannot overflow
        p = np.exp(z)
    cdf = np.cumsum(p)
    u = rng.random() * cdf[-1]
    j = int(np.searchsorted(cdf, u, side="right"))  # first j with cdf[j] > u: p[j] > 0
    if j >= len(keep):                      # u rounded up to the total
        j = int(np.flatnonzero(p > 0)[-1])
    return int(keep[j])
