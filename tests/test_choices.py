"""Choices from the command line: `--set NAME=VALUE` for a configuration argument of the trained
model (checked as if the program said it), and `--data PATH` for the train block's data."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl.loader import load_programs, load_text
from dp.interpreter.core.model import Model
from dp.interpreter.training.checkpoint import load_checkpoint

CHARLM = str(ROOT / "programs" / "charlm_rnn.dp")

# `width` is a size argument that nothing uses: lowering does not yet give the trained model's
# own size arguments their values, so a used one cannot run (the checker takes it).
MLP = """\
Net: R^4 -> R^3
Net(x; act: R -> R = relu, width = 8) =
  FeedForward(FeedForward(x; act = act) : R^6; act = identity)

train Net on csv("train.csv"):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 4; steps 3

run:
  print accuracy(Net, csv("test.csv"))
"""


def _csv(path, rows: int, seed: int, classes: int = 3) -> None:
    rng = np.random.default_rng(seed)
    lines = [",".join(f"{v:.3f}" for v in rng.normal(size=4)) + f",{rng.integers(classes)}"
             for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def mlp(tmp_path):
    _csv(tmp_path / "train.csv", 40, 0)
    _csv(tmp_path / "test.csv", 12, 1)
    program = tmp_path / "net.dp"
    program.write_text(MLP)
    return program


# --- a module argument ------------------------------------------------------------------------
def test_set_cell_lstm_trains_the_lstm_and_runs_with_the_same_choice(tmp_path):
    ckpt = tmp_path / "lstm.safetensors"
    code, out, err = dp_here("train", CHARLM, "--set", "cell=LSTM", "--steps", "2",
                             "--checkpoint", ckpt)
    assert code == 0, err
    assert "training CharRNN: Token[103]^64 -> Token[103]^64 (118,695 parameters)" in out
    tensors, _ = load_checkpoint(ckpt)
    assert "CharRNN.languagemodel.body.cell.simplernn4.U" in tensors  # the LSTM's four gates
    assert "CharRNN.languagemodel.body.cell.U" not in tensors
    written = out[out.index("\nThe ") + 1:]  # the run block's generate, the last report
    assert len(written) == 305  # the prompt, 300 characters and a line break
    code, again, err = dp_here("run", CHARLM, "--set", "cell=LSTM", "--checkpoint", ckpt)
    assert code == 0, err
    assert again.endswith(written)
    code, _, err = dp_here("run", CHARLM, "--checkpoint", ckpt)  # SimpleRNN's parameters
    assert code == 1
    assert err.startswith("error[checkpoint]: checkpoint '" + str(ckpt) + "' has no parameter "
                          "'CharRNN.languagemodel.body.cell.U'")
    assert "\n   = note: a model trained with --set cell=... runs with the same --set\n" in err


def test_a_module_that_does_not_fit_is_refused_with_the_modules_that_do():
    code, out, err = dp_here("train", CHARLM, "--set", "cell=FeedForward", "--steps", "2")
    assert code == 1 and "training" not in out
    assert err == (
        "error[type]: CharRNN needs an RNN for 'cell', but FeedForward is R^n -> R^m\n"
        f"  --> {CHARLM}:8:13\n"
        "   |\n"
        " 8 | CharRNN(ts; cell: RNN = SimpleRNN) =\n"
        "   |             ^^^^^^^^^^^^^^^^^^^^^\n"
        "   = note: RNN is (R^h, R^d) -> R^h\n"
        "   = note: FeedForward comes from the command line: --set cell=FeedForward\n"
        "   = note: modules that fit 'cell': LSTM, SimpleRNN\n")


@pytest.mark.parametrize("value, first, notes", [
    ("LTSM", "error[name]: unknown module 'LTSM'",
     ["did you mean 'LSTM'?", "LTSM comes from the command line: --set cell=LTSM",
      "modules that fit 'cell': LSTM, SimpleRNN"]),
    ("4", "error[type]: cell is a module argument of CharRNN, and 4 is not a module",
     ["4 comes from the command line: --set cell=4", "modules that fit 'cell': LSTM, SimpleRNN"]),
    ("relu", "error[type]: CharRNN needs an RNN for 'cell', but relu is R -> R",
     ["RNN is (R^h, R^d) -> R^h", "relu comes from the command line: --set cell=relu",
      "modules that fit 'cell': LSTM, SimpleRNN"]),
])
def test_a_bad_module_value_points_at_the_argument_it_replaces(value, first, notes):
    code, out, err = dp_here("train", CHARLM, "--set", f"cell={value}")
    assert code == 1 and "training" not in out
    assert err.startswith(first + f"\n  --> {CHARLM}:8:13\n")
    assert re.findall(r"   = note: (.*)\n", err) == notes


BODY = """\
Book: Token[11]^16 -> Token[11]^16
Book(ts; body: (R^d)^n -> (R^e)^n = SequenceRNN(; cell = SimpleRNN, h = 16)) =
  LanguageModel(ts; body = body, d = 16)

train Book on text("book.txt"):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 16; steps 2
"""


@pytest.mark.parametrize("value, count", [
    (None, "891"), ("SequenceRNN(; cell = LSTM, h = 24)", "4,387"),
    ("Transformer(; layers = 1, heads = 2, ff = 32, mask = causal)", "2,875")])
def test_a_module_value_may_carry_its_configuration_and_sizes(tmp_path, value, count):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 20)
    (tmp_path / "book.dp").write_text(BODY)
    code, out, err = dp_here("train", tmp_path / "book.dp",
                             *(("--set", f"body={value}") if value else ()))
    assert code == 0, err
    assert f"Book: Token[11]^16 -> Token[11]^16 ({count} parameters)" in out


def test_the_list_of_what_fits_shows_what_a_module_needs(tmp_path):
    (tmp_path / "book.dp").write_text(BODY)
    code, _, err = dp_here("train", tmp_path / "book.dp", "--set", "body=FeedForward")
    assert code == 1
    assert err.startswith("error[type]: Book needs 'body' to be (R^d)^n -> (R^e)^n, but "
                          "FeedForward is R^n -> R^m\n")
    fits = re.search(r"= note: modules that fit 'body': (.*)\n", err)[1].split(", ")
    assert {"SequenceRNN(; cell = ...)", "Transformer", "PreNorm(; f = ...)", "relu"} <= set(fits)
    assert "FeedForward" not in fits and "Book" not in fits


def test_a_value_that_does_not_parse_is_a_usage_error():
    code, out, err = dp_here("train", CHARLM, "--set", "cell=SequenceRNN(;")
    assert code == 2
    assert err == ("error[usage]: --set cell=SequenceRNN(;: unexpected end of input; "
                   "expected a name\n")


def test_the_program_is_checked_as_if_it_said_the_value(mlp):
    """`--set act=tanh --set width=5` gives the module that the program written with them
    gives: same parameters, same outputs."""
    chosen, _ = load_programs([str(mlp)], {"act": "tanh", "width": "5", "steps": "9"})
    written = load_text(MLP.replace("act: R -> R = relu, width = 8",
                                    "act: R -> R = tanh, width = 5"))
    assert chosen.defs["Net"].sizes[0][2] == 5  # (name, variable, default)
    mine, theirs = Model(chosen, "Net", dtype=np.float64), Model(written, "Net",
                                                                  dtype=np.float64)
    mine.init(0)
    theirs.init(0)
    x = np.random.default_rng(3).normal(size=(5, 4))
    np.testing.assert_array_equal(mine.predict(x), theirs.predict(x))
    relu = Model(load_programs([str(mlp)])[0], "Net", dtype=np.float64)
    relu.init(0)
    assert not np.allclose(relu.predict(x), mine.predict(x))


def test_a_chosen_activation_trains(mlp):
    code, out, err = dp_here("train", mlp, "--set", "act=tanh", "--set", "lr=0.05")
    assert code == 0, err
    assert "trained 3 steps" in out and re.search(r"accuracy\(Net, .*\) = 0\.\d+", out)


@pytest.mark.parametrize("sets, message, notes", [
    (["width=0"], "error[type]: width is a size of Net, a positive whole number, not 0",
     ["0 comes from the command line: --set width=0"]),
    (["width=relu"], "error[type]: width is a size of Net, a positive whole number, not relu",
     ["relu comes from the command line: --set width=relu"]),
    (["act=seq_mean"], "error[type]: Net needs 'act' to be R -> R, but seq_mean is "
     "(R^d)^n -> R^d", ["seq_mean comes from the command line: --set act=seq_mean"]),
])
def test_bad_values_are_check_errors_at_the_argument(mlp, sets, message, notes):
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = dp_here("train", mlp, *args)
    assert code == 1 and "training" not in out
    assert err.startswith(message + f"\n  --> {mlp}:2:")
    assert re.findall(r"   = note: (.*)\n", err)[:len(notes)] == notes


def test_the_modules_that_fit_an_activation_are_listed(mlp):
    code, _, err = dp_here("train", mlp, "--set", "act=LSTM")
    assert code == 1
    fits = re.search(r"= note: modules that fit 'act': (.*)\n", err)[1].split(", ")
    assert {"relu", "tanh", "sigmoid", "identity", "softmax"} <= set(fits)
    assert not {"LSTM", "FeedForward", "conv2d", "Net"} & set(fits)


def test_an_unknown_name_lists_settings_and_arguments():
    code, out, err = dp_here("train", CHARLM, "--set", "cel=LSTM")
    assert code == 2
    assert err == ("error[usage]: --set cel: the program has no setting 'cel'\n"
                   "   = note: did you mean 'cell'?\n"
                   "   = note: settings: batch, epochs, steps, seed, warmup, schedule, clip, "
                   "patience; adam: lr, beta1, beta2, "
                   "eps, weight_decay\n"
                   "   = note: CharRNN's arguments: cell\n")


def test_a_name_that_is_a_setting_and_an_argument_is_refused(mlp):
    mlp.write_text(MLP.replace("width = 8", "batch = 8"))
    code, out, err = dp_here("train", mlp, "--set", "batch=2")
    assert code == 2 and "training" not in out
    assert err == ("error[usage]: --set batch is ambiguous: batch is a setting of the train "
                   "block and a configuration argument of Net\n"
                   "   = note: rename Net's argument to choose it from the command line\n")


def test_run_takes_only_the_models_arguments(mlp):
    code, _, err = dp_here("run", mlp, "--set", "lr=0.1")
    assert code == 2
    assert err == ("error[usage]: --set lr: dp run chooses configuration arguments of the "
                   "trained model, and 'lr' is none\n"
                   "   = note: Net's arguments: act, width\n")


# --- --data -------------------------------------------------------------------------------------
def test_data_points_the_train_block_and_what_reads_the_same_elsewhere(tmp_path):
    (tmp_path / "book.txt").write_text("the cat sat on the mat. " * 40)
    (tmp_path / "other.txt").write_text("a dog ran in the fog. " * 40)
    program = tmp_path / "book.dp"
    program.write_text("""\
Book: Token[13]^16 -> Token[13]^16
Book(ts) = LanguageModel(ts; body = SequenceRNN(; cell = SimpleRNN, h = 16), d = 8)

train Book on text("book.txt"):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 8; steps 3

run:
  print loss(Book, text("book.txt", split = test))
""")
    other = str(tmp_path / "other.txt")
    code, out, err = dp_here("train", program, "--data", other)
    assert code == 0, err
    assert f"random windows of 16 characters of {other}" in out
    assert re.search(rf'loss\(Book, text\("{re.escape(other)}", split = test\)\) = \d', out)
    code, out, err = dp_here("train", program)  # book.txt has 11 characters, not 13
    assert code == 1
    assert "but the text has 11 distinct characters" in err and "--data" not in err
    code, out, err = dp_here("run", program, "--data", other)
    assert code == 0, err


def test_data_errors_say_the_file_came_from_the_command_line(mlp, tmp_path):
    _csv(tmp_path / "five.csv", 20, 2, classes=5)
    code, out, err = dp_here("train", mlp, "--data", tmp_path / "five.csv")
    assert code == 1
    assert err.startswith("error[data]: Net scores 3 classes (0 to 2), but the labels range "
                          "from 0 to 4\n")
    assert err.endswith(f"   = note: the data is read from --data {tmp_path / 'five.csv'}\n")


@pytest.mark.parametrize("program, path, message", [
    ("programs/digits_mlp.dp", "programs/charlm_rnn.dp",
     "error[usage]: --data replaces the file the train block reads, but digits(...) reads "
     "none\n   = note: --data works with text(...), csv(...) and npz(...)\n"),
    ("programs/charlm_rnn.dp", "no/such.txt", "error[usage]: --data no/such.txt: no such file\n"),
])
def test_data_that_cannot_be_is_a_usage_error(program, path, message):
    code, out, err = dp_here("train", program, "--data", path, cwd=ROOT)
    assert (code, err) == (2, message) and "training" not in out


def test_a_real_argument_is_chosen_as_a_number(tmp_path):
    """`--set rate=0.5` sets a real argument (dropout's rate); `0` stays a number, not a size;
    a module for it is refused at the argument."""
    program = tmp_path / "drop.dp"
    program.write_text(
        "Net: R^64 -> R^10\n"
        "Net(x; rate = 0.0) = FeedForward(dropout(FeedForward(x) : R^32; p = rate); "
        "act = identity)\n\n"
        "train Net on digits(split = train):\n"
        "  loss cross_entropy; optimizer sgd(lr = 0.1); batch 32; steps 3\n")
    losses = {}
    for value in ("0.5", "0"):
        code, out, err = dp_here("train", program, "--set", f"rate={value}",
                                 "--checkpoint", tmp_path / f"{value}.safetensors")
        assert code == 0, err
        losses[value] = re.search(r"final loss (\S+);", out).group(1)
    assert losses["0.5"] != losses["0"]  # half the hidden entries dropped: another run
    code, out, err = dp_here("train", program, "--set", "rate=relu")
    assert code == 1 and err.startswith("error[type]: rate is a number argument of Net, not relu")
