"""Sampling from the command line (`dp generate FILE "prompt"`) and from the REPL
(`generate(M, "prompt", n; ...)`): the run block's generate, with the trained checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import ROOT, dp_here, run_dp
from dp.dsl.loader import load
from dp.interpreter.commands import repl
from dp.interpreter.core.model import Model
from dp.interpreter.training.train import load_trained

BOOK = """\
Book: Token[11]^16 -> Token[11]^16
Book(ts; cell: RNN = SimpleRNN) =
  LanguageModel(ts; body = SequenceRNN(; cell = cell, h = 32), d = 16)

train Book on text("book.txt"):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 16; steps 40

run:
  print generate(Book, "the ", 30; temperature = 0.5, top_k = 3, seed = 7)
"""


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A small trained language model: (the program, what its run block wrote)."""
    folder = tmp_path_factory.mktemp("book")
    (folder / "book.txt").write_text("the cat sat on the mat. " * 60)
    program = folder / "book.dp"
    program.write_text(BOOK)
    code, out, err = dp_here("train", program)
    assert code == 0, err
    return str(program), out.rstrip("\n").splitlines()[-1]


def _generate(program, *args) -> str:
    code, out, err = dp_here("generate", program, *args)
    assert code == 0, err
    assert out.endswith("\n")
    return out[:-1]


def test_generate_writes_what_the_run_block_writes(book):
    program, written = book
    assert written.startswith("the ") and len(written) == 34
    again = _generate(program, "the ", "-n", "30", "--temperature", "0.5", "--top-k", "3",
                      "--seed", "7")
    assert again == written


def test_the_same_seed_gives_the_same_text_and_another_seed_other_text(book):
    program, _ = book
    first = _generate(program, "the c", "-n", "60", "--seed", "1")
    assert first.startswith("the c") and len(first) == 65
    assert _generate(program, "the c", "-n", "60", "--seed", "1") == first
    assert _generate(program, "the c", "-n", "60", "--seed", "2") != first


def test_temperature_zero_is_the_greedy_text_whatever_the_seed(book):
    program, _ = book
    greedy = _generate(program, "the ", "-n", "40", "--temperature", "0")
    assert _generate(program, "the ", "-n", "40", "--temperature", "0", "--seed", "9") == greedy
    tprog = load([program])
    model = Model(tprog, "Book")
    load_trained(model, program.replace(".dp", ".safetensors"))
    ids = list(model.vocab.encode("the "))
    for _ in range(40):  # the argmax at the last position, the window left-aligned
        window = np.zeros((1, 16), np.int64)
        window[0, :len(ids[-16:])] = ids[-16:]
        ids.append(int(model.predict(window)[0, len(ids[-16:]) - 1].argmax()))
    assert greedy == model.vocab.decode(np.array(ids))


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "--temperature must be a non-negative number, not -1.0"),
    (["--temperature", "nan"], "--temperature must be a non-negative number, not nan"),
    (["--top-k", "-2"], "--top-k must be a non-negative whole number, not -2"),
    (["--seed", "-1"], "--seed must be a non-negative whole number, not -1"),
    (["-n", "-5"], "-n must be a non-negative whole number, not -5"),
    (["-n", "ten"], "argument -n: invalid int value: 'ten' (see `dp --help`)"),
    (["--set", "lr=1"], "--set lr: dp generate chooses configuration arguments of the trained "
                        "model, and 'lr' is none\n   = note: Book's arguments: cell"),
])
def test_bad_flags_are_usage_errors(book, args, message):
    code, out, err = dp_here("generate", book[0], "the ", *args)
    assert (code, out, err) == (2, "", f"error[usage]: {message}\n")


def test_an_empty_prompt_is_a_usage_error(book):
    assert dp_here("generate", book[0], "") == (
        2, "", "error[usage]: the prompt must have at least one character\n")


def test_a_character_the_model_never_saw_is_a_data_error(book):
    code, out, err = dp_here("generate", book[0], "the dog")
    assert code == 1 and out == ""
    assert err.startswith("error[data]: the prompt has a character that is not in the "
                          "vocabulary: 'd' (U+0064) at index 4")


def test_generate_needs_a_language_model_and_its_checkpoint(tmp_path):
    code, out, err = dp_here("generate", "programs/digits_mlp.dp", "The ", cwd=ROOT)
    assert code == 1
    assert err.startswith("error[value]: dp generate writes with a model trained on text, but "
                          "Digits is trained on digits(...)\n  --> programs/digits_mlp.dp:")
    code, out, err = dp_here("generate", "programs/charlm_rnn.dp", "The ", "--checkpoint",
                             tmp_path / "none.safetensors", cwd=ROOT)
    assert code == 1
    assert err.startswith(f"error[checkpoint]: checkpoint file '{tmp_path}/none.safetensors' "
                          "does not exist")


def test_generate_takes_the_choices_the_model_was_trained_with(book, tmp_path):
    program, _ = book
    ckpt = str(tmp_path / "lstm.safetensors")
    code, out, err = dp_here("train", program, "--set", "cell=LSTM", "--steps", "3",
                             "--checkpoint", ckpt)
    assert code == 0, err
    lstm = _generate(program, "the ", "--set", "cell=LSTM", "--checkpoint", ckpt, "-n", "20")
    assert lstm.startswith("the ") and len(lstm) == 24
    code, out, err = dp_here("generate", program, "the ", "--checkpoint", ckpt)
    assert code == 1
    assert "   = note: a model trained with --set cell=... runs with the same --set\n" in err


def test_the_real_command_exits_as_it_says(book):
    code, out, err = run_dp("generate", book[0], "the ", "-n", "10", "--seed", "3")
    assert code == 0 and out == _generate(book[0], "the ", "-n", "10", "--seed", "3") + "\n"
    code, out, err = run_dp("generate", book[0], "the ", "--top-k", "-1")
    assert code == 2 and "Traceback" not in err


# --- the REPL -------------------------------------------------------------------------------------
def _session(book) -> repl.Session:
    s = repl.Session(io.StringIO(), io.StringIO())
    s.feed(f":load {book[0]}")
    assert s.err.getvalue() == ""
    assert "Book runs with the parameters trained in" in s.out.getvalue()
    return s


def test_the_repl_generates_as_the_command_does(book):
    s = _session(book)
    start = len(s.out.getvalue())
    s.feed('generate(Book, "the ", 30; temperature = 0.5, top_k = 3, seed = 7)')
    s.feed('generate(Book, "the c", 60; seed = 1)')
    assert s.err.getvalue() == ""
    assert s.out.getvalue()[start:] == (
        book[1] + "\n" + _generate(book[0], "the c", "-n", "60", "--seed", "1") + "\n")
    assert "generate" in s.names()


@pytest.mark.parametrize("line, message, where", [
    ('generate(Book, "the ", 5; temperature = -1)',
     "error[value]: generate temperature must be a non-negative number, but it is -1",
     "<repl>:2:41"),
    ('generate(Book, "the ", 5; top_p = 3)',
     "error[name]: generate has no setting 'top_p'; it has temperature, top_k, seed",
     "<repl>:2:27"),
    ('generate(FeedForward, "the ", 5)',
     "error[value]: FeedForward has no trained parameters here: generate writes with a "
     "language model trained by dp train FILE and loaded with :load FILE", "<repl>:2:10"),
    ('generate(Nope, "the ", 5)', "error[name]: unknown module 'Nope'", "<repl>:2:10"),
    ('generate(Book, "the dog", 5)',
     "error[data]: the prompt has a character that is not in the vocabulary", "<repl>:2:1"),
])
def test_repl_generate_errors_point_at_the_input(book, line, message, where):
    s = _session(book)
    s.feed(line)
    err = s.err.getvalue()
    assert err.startswith(message) and f"  --> {where}\n" in err
    assert "Traceback" not in err and "internal" not in err


def test_the_repl_refuses_a_module_changed_since_its_checkpoint(book):
    s = _session(book)
    for line in ("Book: Token[11]^16 -> Token[11]^16",
                 "Book(ts) = LanguageModel(ts; body = SequenceRNN(; cell = LSTM, h = 32), d = 16)",
                 "", 'generate(Book, "the ", 5)'):
        s.feed(line)
    assert s.err.getvalue().startswith("error[value]: Book has no trained parameters here")


def test_the_repl_refuses_a_checkpoint_trained_with_other_choices(book, tmp_path):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 60)
    (tmp_path / "book.dp").write_text(BOOK)
    code, out, err = dp_here("train", tmp_path / "book.dp", "--set", "cell=LSTM", "--steps", "2")
    assert code == 0, err
    s = _session((str(tmp_path / "book.dp"), None))
    s.feed('generate(Book, "the ", 5)')
    assert s.err.getvalue().startswith(
        "error[checkpoint]: Book does not have the parameters its checkpoint holds (was it "
        "trained with dp train --set?)\n  --> <repl>:2:10\n")
