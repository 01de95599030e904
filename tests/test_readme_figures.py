"""The README's headline results, trained exactly as the README says: each test reads its
figure from README.md and trains the shipped program, so a change that degrades a result (or a
README figure nobody measured) fails. Held-out losses must be within 1% of the README's (the
runs are seeded, but a different CPU rounds a chaotic run differently); accuracies within one
example per thousand."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, dp_here

README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.slow


def _readme(pattern: str) -> float:
    found = re.search(pattern, README, re.S)
    assert found, f"README.md no longer says {pattern!r}"
    return float(found[1])


def _train(tmp_path, program: str, *args: str) -> str:
    code, out, err = dp_here("train", ROOT / "programs" / program, "--checkpoint",
                             tmp_path / "m.safetensors", *args)
    assert code == 0, err
    return out


def _report(out: str, report: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(report)).rsplit(" = ", 1)[1]


@pytest.mark.parametrize("program, args, pattern, report", [
    ("charlm_rnn.dp", (), r"charlm_rnn\.dp` trains.*?held-out loss ([0-9.]+) nats/char",
     "loss(CharRNN"),
    ("charlm_rnn.dp", ("--set", "cell=LSTM"), r"cell=LSTM`.*?held-out\s+([0-9.]+) nats/char",
     "loss(CharRNN"),
    ("charlm_transformer.dp", (), r"charlm_transformer\.dp` trains.*?held-out\s+([0-9.]+) nats",
     "loss(CharTransformer"),
], ids=["rnn", "lstm", "transformer"])
def test_character_model_reaches_the_readme_loss(tmp_path, program, args, pattern, report):
    want = _readme(pattern)
    got = float(_report(_train(tmp_path, program, *args), report))
    assert abs(got - want) <= 0.01 * want, (got, want)


def test_bert_reaches_the_readme_accuracy(tmp_path):
    want = _readme(r"reaches ([0-9.]+)% held-out masked-character accuracy") / 100
    got = _report(_train(tmp_path, "bert_masked.dp"), "accuracy(MaskedChars")
    right, total = map(int, re.fullmatch(r"[0-9.]+ \((\d+)/(\d+)\)", got).groups())
    # the README's figure is rounded to 0.1%; one example more or less is 0.1% of the 978
    assert abs(right / total - want) <= 0.0005 + 1 / total, (right, total, want)


def test_seq2seq_writes_every_string_backwards(tmp_path):
    want = _readme(r"backwards: ([0-9.]+)% of 1,000 held-out strings") / 100
    got = _report(_train(tmp_path, "seq2seq_reverse.dp"), "exact_match(Reverse")
    right, total = map(int, re.fullmatch(r"[0-9.]+ \((\d+)/(\d+)\)", got).groups())
    assert total == 1000 and right >= round(want * 1000) - 1, got
