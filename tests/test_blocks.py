"""Train and run blocks checked in dsl/ into typed records: every mistake in them is found by
`dp check` (exact message, line and column, exit 1), and `dp train` stops with the same error
before it trains; a regression model trains, reports its loss and predicts values."""

from __future__ import annotations

import io
import re

import pytest

from conftest import dp_here
from dp.dsl import load_text, parse
from dp.dsl.check_blocks import override
from dp.dsl.check_sources import check_source
from dp.dsl.errors import DpError
from dp.interpreter.commands import repl

DIGITS = """\
Net: R^64 -> R^10
Net(x) = FeedForward(x)

train Net on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1); epochs 1

run:
  print accuracy(Net, digits(split = test))
"""
LINE = """\
Line: R^3 -> R^1
Line(x) = FeedForward(x; act = identity)

train Line on csv("line.csv"):
  loss squared_error; optimizer adam(lr = 0.05); batch 16; epochs 60

run:
  print loss(Line, csv("line.csv"))
  print predict(Line, csv("line.csv"), 3)
"""
BOOK = """\
Book: Token[12]^8 -> Token[12]^8
Book(ts) = LanguageModel(ts; body = SequenceRNN(; cell = SimpleRNN, h = 8), d = 8)

train Book on text(pydoc_topics):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 4; steps 2

run:
  print generate(Book, "The ", 10)
"""


def _edit(program: str, old: str, new: str) -> str:
    assert old in program, old
    return program.replace(old, new, 1)


# (name, program, kind, message, line, col): one mistake each
MISTAKES = [
    ("unknown setting", _edit(DIGITS, "epochs 1", "epoch 1"), "name",
     "unknown training setting 'epoch'", 5, 48),
    ("setting twice", _edit(DIGITS, "epochs 1", "epochs 1; epochs 2"), "name",
     "the setting 'epochs' is given twice", 5, 58),
    ("no loss", _edit(DIGITS, "loss cross_entropy; ", ""), "name",
     "the train block needs a 'loss' setting", 4, 1),
    ("unknown loss", _edit(DIGITS, "cross_entropy", "crossentropy"), "name",
     "unknown loss 'crossentropy'; known: cross_entropy, squared_error, absolute_error, "
     "logistic, hinge", 5, 8),
    ("unknown optimizer", _edit(DIGITS, "sgd(", "sgdm("), "name",
     "unknown optimizer 'sgdm'; known: adam, adamw, sgd", 5, 33),
    ("optimizer argument", _edit(DIGITS, "lr = 0.1", "lr = 0.1, momentun = 0.9"), "name",
     "sgd has no hyperparameter 'momentun'; it has lr, momentum, nesterov, weight_decay", 5, 47),
    ("optimizer value", _edit(DIGITS, "lr = 0.1", "lr = -1"), "value",
     "sgd lr must be positive, but it is -1", 5, 42),
    ("optimizer word", _edit(DIGITS, "lr = 0.1", "lr = fast"), "type",
     "sgd lr must be a number, but it is 'fast'", 5, 42),
    ("no learning rate", _edit(DIGITS, "sgd(lr = 0.1)", "sgd"), "value",
     "sgd needs a learning rate, e.g. sgd(lr = 0.1)", 5, 33),
    ("batch", _edit(DIGITS, "epochs 1", "batch 0"), "value",
     "batch must be a positive whole number, but it is 0", 5, 54),
    ("seed", _edit(DIGITS, "epochs 1", "seed 1.5"), "value",
     "seed must be a non-negative whole number, but it is 1.5", 5, 53),
    ("checkpoint", _edit(DIGITS, "epochs 1", "checkpoint net"), "type",
     "checkpoint is a file name in quotes, e.g. checkpoint \"digits.safetensors\", but it is "
     "net", 5, 59),
    ("unknown source", _edit(DIGITS, "on digits(", "on digit("), "name",
     "expected a data source: digits(split = train), npz(\"file.npz\"), csv(\"file.csv\"), "
     "text(pydoc_topics), reversal(split = train) or random(n = 8)", 4, 14),
    ("source argument", _edit(DIGITS, "split = train", "splt = train"), "name",
     "digits has no argument 'splt'; it has split", 4, 21),
    ("source value", _edit(DIGITS, "split = train", "split = tset"), "value",
     "digits split must be train, test or all, but it is tset", 4, 29),
    ("file name", _edit(DIGITS, "digits(split = train)", "csv(data)"), "type",
     "csv takes the file name as a string, e.g. csv(\"file.csv\")", 4, 18),
    ("no targets", _edit(DIGITS, "digits(split = train)", "random(n = 8)"), "value",
     "training needs examples with targets, but random(n = 8) has none", 4, 14),
    ("text for a real model", _edit(_edit(DIGITS, "digits(split = train):",
                                          "text(pydoc_topics):"), "epochs 1", "steps 1"),
     "type", "text feeds a model of token sequences, Token[V]^n, but Net reads R^64", 4, 14),
    ("eval on training text", _edit(BOOK, "steps 2", "steps 2; eval text(pydoc_topics)"),
     "value", "eval reads held-out data, e.g. text(...; split = test)", 5, 73),
    ("unknown model", _edit(DIGITS, "train Net", "train Nett"), "name",
     "unknown module 'Nett'", 4, 7),
    ("abstract model", _edit(DIGITS, "train Net", "train SequenceModel"), "type",
     "SequenceModel is abstract: train an implementation of it", 4, 7),
    ("model with no definition", _edit(DIGITS, "Net(x) = FeedForward(x)\n", ""), "name",
     "Net has a signature but no definition", 3, 7),
    ("open sizes", _edit(DIGITS, "R^64 -> R^10", "R^n -> R^m"), "shape",
     "Net: R^n -> R^m has open dimensions; a model to train or run needs concrete sizes", 4, 7),
    ("two train blocks", DIGITS + "\ntrain Net on digits(split = all):\n  loss cross_entropy; "
     "optimizer adam\n", "name", "a program trains one module, but this is a second train "
     "block", 10, 1),
    ("scores of a sequence", _edit(_edit(DIGITS, "R^64 -> R^10", "(R^8)^8 -> (R^4)^8"),
                                   "FeedForward(x)", "map(FeedForward, x)"), "shape",
     "cross_entropy needs scores R^k, but Net gives (R^4)^8", 5, 8),
    ("tokens with squared_error", _edit(BOOK, "cross_entropy", "squared_error"), "type",
     "squared_error compares real values, but Book gives tokens, Token[12]^8", 5, 8),
    ("unknown report", _edit(DIGITS, "print accuracy", "print acuracy"), "name",
     "unknown report 'acuracy'", 8, 9),
    ("not a report", _edit(DIGITS, "accuracy(Net, digits(split = test))", "Net"), "type",
     "print shows text, accuracy(M, data), exact_match(M, data), loss(M, data), "
     "predict(M, data, n), params(M), time(M, data), baseline(M, text) or "
     "generate(M, \"prompt\", n), but this is Net", 8, 9),
    ("report arity", _edit(DIGITS, "accuracy(Net, digits(split = test))", "accuracy(Net)"),
     "arity", "accuracy takes 2 arguments, accuracy(M, data), but 1 was given", 8, 9),
    ("report setting", _edit(DIGITS, "split = test))", "split = test); top_k = 1)"), "name",
     "accuracy has no setting 'top_k'", 8, 45),
    ("another module", _edit(DIGITS, "accuracy(Net,", "accuracy(FeedForward,"), "name",
     "expected Net, the module this program trains, but found FeedForward", 8, 18),
    ("report on training text", _edit(BOOK, 'generate(Book, "The ", 10)',
                                      "loss(Book, text(pydoc_topics))"), "value",
     "loss reads the held-out text: text(...; split = test)", 8, 20),
    ("predict count", _edit(DIGITS, "accuracy(Net, digits(split = test))",
                            "predict(Net, digits(split = test), 0)"), "value",
     "predict's number of examples must be a positive whole number, but it is 0", 8, 44),
    ("baseline of digits", _edit(DIGITS, "accuracy(", "baseline("), "value",
     "baseline compares with the character frequencies of a text: give text(...; split = "
     "test)", 8, 23),
    ("accuracy of a regression", _edit(LINE, "print loss", "print accuracy"), "type",
     "accuracy counts right classes, but Line gives real values (trained with squared_error)",
     8, 9),
    ("generate of classes", _edit(DIGITS, "accuracy(Net, digits(split = test))",
                                  'generate(Net, "The ", 10)'), "type",
     "generate writes text with a model of token sequences, Token[V]^n -> Token[V]^n, but Net "
     "is R^64 -> R^10", 8, 18),
    ("generate setting", _edit(BOOK, "10)", "10; top_p = 3)"), "name",
     "generate has no setting 'top_p'; it has temperature, top_k, seed", 8, 36),
    ("generate length", _edit(BOOK, "10)", "ten)"), "value",
     "generate's number of characters must be a non-negative whole number, but it is ten",
     8, 32),
    ("prompt", _edit(BOOK, '"The "', "The"), "type",
     "the prompt must be a string, e.g. \"The \", but it is The", 8, 24),
    ("generate untrained", _edit(BOOK, BOOK[BOOK.index("train"):BOOK.index("run:")], ""),
     "value", "generate writes with the vocabulary of the text Book is trained on, but this "
     "program does not train it", 5, 9),
]


@pytest.mark.parametrize("name,program,kind,message,line,col", MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_check_finds_the_mistake_and_train_stops_before_training(tmp_path, name, program,
                                                                 kind, message, line, col):
    path = tmp_path / "prog.dp"
    path.write_text(program)
    code, out, err = dp_here("check", str(path))
    head = err.splitlines()[:2]
    assert head == [f"error[{kind}]: {message}", f"  --> {path}:{line}:{col}"], err
    assert (code, out) == (1, "") and err.count("error[") == 1
    code, out, again = dp_here("train", str(path))
    assert (code, again) == (1, err) and "training" not in out


def test_every_mistake_of_a_block_is_reported_at_once(tmp_path):
    program = _edit(DIGITS, "epochs 1", "epoch 1; batch -2")
    program = _edit(program, "accuracy(Net, digits(split = test))", "loss(Net)")
    path = tmp_path / "prog.dp"
    path.write_text(program)
    code, out, err = dp_here("check", str(path))
    assert code == 1 and re.findall(r"error\[\w+\]: .*", err) == [
        "error[name]: unknown training setting 'epoch'",
        "error[value]: batch must be a positive whole number, but it is -2",
        "error[arity]: loss takes 2 arguments, loss(M, data), but 1 was given"]


# --- a model of real values -------------------------------------------------------------------
def _line_data(folder) -> None:
    """y = 2a - b + c/2 + 1 on 64 rows, with a header."""
    rows = ["a,b,c,y"]
    for i in range(64):
        a, b, c = (i % 7) / 3 - 1, (i % 5) / 2 - 1, (i % 11) / 5 - 1
        rows.append(f"{a:.4f},{b:.4f},{c:.4f},{2 * a - b + c / 2 + 1:.4f}")
    (folder / "line.csv").write_text("\n".join(rows) + "\n")


def test_a_regression_model_trains_reports_its_loss_and_predicts_values(tmp_path):
    _line_data(tmp_path)
    path = tmp_path / "line.dp"
    path.write_text(LINE)
    code, out, err = dp_here("train", str(path))
    assert code == 0, err
    lines = out.splitlines()
    loss = re.fullmatch(r'loss\(Line, csv\("line.csv"\)\) = ([0-9.]+)', lines[-2])
    assert loss and float(loss[1]) < 1e-3, out
    predicted = re.fullmatch(r'predict\(Line, csv\("line.csv"\), 3\) = (.*)', lines[-1])
    pairs = re.findall(r"(-?[0-9.]+) \(true (-?[0-9.]+)\)", predicted[1])
    assert len(pairs) == 3 and all(abs(float(p) - float(t)) < 0.05 for p, t in pairs), out
    assert float(pairs[0][1]) == -0.5  # the first row: a = b = c = -1, not a class guess
    code, again, err = dp_here("run", str(path))
    assert (code, again.splitlines()) == (0, lines[-2:]), err


def test_an_untrained_model_of_real_values_reports_squared_error(tmp_path):
    """Without a train block, a model whose output is not scores R^k gives values: its loss is
    squared_error, and accuracy of it is a check error."""
    _line_data(tmp_path)
    path = tmp_path / "line.dp"
    program = (LINE[:LINE.index("train")] + LINE[LINE.index("run:"):]).replace(
        "R^3 -> R^1", "R^3 -> R").replace("FeedForward(x; act = identity)",
                                          "sum(FeedForward(x; act = identity) : R^1)")
    path.write_text(program)
    tprog = load_text(program, str(path))
    assert tprog.train is None
    assert {(r.loss, r.outputs) for p in tprog.runs[0].prints for r in p.items} == {
        ("squared_error", "values")}
    code, out, err = dp_here("run", str(path))
    assert code == 0, err
    assert out.startswith("Line is not trained here: its parameters are initialized with "
                          "seed 0\nloss(Line, csv(\"line.csv\")) = ")
    path.write_text(program.replace("print loss", "print accuracy"))
    code, out, err = dp_here("check", str(path))
    assert code == 1 and err.startswith("error[type]: accuracy counts right classes, but Line "
                                        "gives real values (R, not scores R^k)\n")


# --- the records --------------------------------------------------------------------------
def test_the_typed_program_carries_the_records_of_the_users_blocks():
    tprog = load_text(DIGITS.replace("epochs 1", "epochs 3; eval digits(split = test)"))
    t = tprog.train
    assert (t.model, t.loss, t.batch, t.epochs, t.steps, t.seed, t.checkpoint, t.outputs) == (
        "Net", "cross_entropy", 32, 3, None, 0, None, "classes")
    assert (t.data.kind, t.data.arg("split"), t.eval.arg("split")) == ("digits", "train", "test")
    assert dict(t.optimizer.hyper) == {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                                       "nesterov": 0.0}
    (run,) = tprog.runs
    (report,) = run.prints[0].items
    assert (report.name, report.label, report.model) == (
        "accuracy", "accuracy(Net, digits(split = test))", "Net")
    assert load_text("A: R^2 -> R^2\nA(x) = x\n").train is None  # and no stdlib blocks


def test_sources_fill_their_defaults_and_name_their_files():
    def source(text: str):
        return check_source(parse(f"run:\n  print {text}\n", "s.dp").items[0].prints[0].exprs[0])

    assert source("digits()").args == (("split", "train"),)
    csv = source('csv("d.csv", label = none)')
    assert (csv.file, csv.arg("label"), csv.targets) == ("d.csv", None, False)
    text = source("text(pydoc_topics, mask = 0.15)")
    assert (text.file, text.text, text.windows, text.arg("mask")) == (
        None, "pydoc_topics", True, 0.15)
    assert not source("random(n = 3)").targets and source('npz("a.npz")').targets
    with pytest.raises(DpError, match=r"random n must be a positive whole number, but it is 0"):
        source("random(n = 0)")


def test_set_overrides_are_checked_by_the_blocks_rules():
    t = load_text(DIGITS).train
    changed = override(t, {"epochs": "3", "lr": 0.5, "momentum": "0.9", "seed": None})
    assert (changed.epochs, dict(changed.optimizer.hyper)["lr"]) == (3, 0.5)
    assert dict(changed.optimizer.hyper)["momentum"] == 0.9 and t.epochs == 1
    for sets, kind, message in [
        ({"nesterov": "1", "momentum": "0"}, "value", "sgd nesterov = 1 needs a positive momentum"),
        ({"batch": "0"}, "usage", "--batch must be positive, but it is 0"),
        ({"loss": "squared_error"}, "usage", "--set loss: the program has no setting 'loss'")]:
        with pytest.raises(DpError) as e:
            override(t, sets)
        assert (e.value.kind, e.value.message) == (kind, message)


def test_the_repl_reads_examples_through_the_same_rules():
    out, err = io.StringIO(), io.StringIO()
    session = repl.Session(out, err)
    session.feed("x = digits(split = tset)[0]")
    assert err.getvalue().startswith(
        "error[value]: digits split must be train, test or all, but it is tset\n"
        "  --> <repl>:1:20\n")
    session.feed("y = digits(split = test)[1]")
    assert "example 1 of digits:test" in out.getvalue()
