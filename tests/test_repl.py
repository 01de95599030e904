"""`dp repl`: driven in a real pseudo-terminal (prompt_toolkit: completion, history, Ctrl-D),
through a pipe (plain lines, exit status), and in-process for what a user cannot easily cause.

Two terminal sessions do many checks each: every process start imports numba.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pexpect
import pytest
from conftest import ROOT, dp_here
from dp.dsl.loader import load
from dp.interpreter.commands import repl
from dp.interpreter.core.model import Model
from dp.interpreter.data.dataset import load_digits
from dp.interpreter.training.train import load_trained

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NUMBER = re.compile(r"-?\d+\.\d*(?:e[+-]?\d+)?|-?\d+")
# prompt_toolkit turns bracketed paste on when a prompt starts and off when a line is accepted
PROMPT_STARTS, LINE_ACCEPTED = "\x1b[?2004h", "\x1b[?2004l"


def _spawn(tmp_path, *files):
    """A session in a folder with a copy of programs/ but none of their checkpoints, so
    modules run with parameters from the seed."""
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(tmp_path),
               XDG_STATE_HOME=str(tmp_path / "state"), NO_COLOR="1")  # echoed as typed
    shutil.copytree(ROOT / "programs", tmp_path / "programs",
                    ignore=shutil.ignore_patterns("*.safetensors*", "*.metrics.jsonl"))
    child = pexpect.spawn(sys.executable, ["-m", "dp.interpreter.commands.cli", "repl", *files],
                          env=env, cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          dimensions=(50, 200))
    child.expect_exact(PROMPT_STARTS)
    return child, _text(child.before)


def _text(raw: str) -> str:
    return ANSI.sub("", raw).replace("\r\n", "\n")


def _answer(child) -> str:
    """What the REPL printed for the line just sent, up to its next prompt."""
    child.expect_exact(LINE_ACCEPTED)
    child.expect_exact(PROMPT_STARTS)
    return _text(child.before)


def _ask(child, line: str) -> str:
    child.sendline(line)
    return _answer(child)


def _values(printed: str) -> np.ndarray:
    """The numbers of a printed value (the lines after its `TYPE  shape (...)` line)."""
    body = printed.split("\n", 1)[1]
    return np.array([float(v) for v in NUMBER.findall(body)])


def _random_value(name: str, shape, seed: int = 0) -> np.ndarray:
    """What `name: R^shape` draws (commands/repl_values.py, random_value)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape, np.float32)


def _digits_model() -> Model:
    model = Model(load([str(ROOT / "programs" / "digits_mlp.dp")]), "Digits")
    model.init(0)
    return model


# --- in a terminal ----------------------------------------------------------------------------
def test_terminal_session_evaluates_completes_and_recalls(tmp_path):
    child, banner = _spawn(tmp_path, "programs/digits_mlp.dp")
    assert "loaded programs/digits_mlp.dp: Digits" in banner

    shown = _ask(child, "Digits")
    assert shown.startswith("Digits: R^64 -> R^10\n  feedforward1 = FeedForward: R^64 -> R^128\n")
    assert re.search(r"  total +9,610\n", shown)
    assert _ask(child, ":type FeedForward") == "FeedForward: R^n -> R^m\n"

    x = _random_value("x", (3, 4))
    printed = _ask(child, "x: R^(3, 4)")
    assert printed.startswith("x : R^(3, 4)  shape (3, 4), standard normal (seed 0)\n")
    assert np.allclose(_values(printed), x.ravel(), atol=1e-4)
    assert _ask(child, ":type FeedForward(flatten(x)) : R^8") == \
        "FeedForward(flatten(x)) : R^8\n"
    printed = _ask(child, "2 * x + 1")
    assert printed.startswith("R^(3, 4)  shape (3, 4)\n")
    assert np.allclose(_values(printed), (2 * x + 1).ravel(), atol=1e-4)

    # one example of the digits, then the module on it: the same numbers as Model gives
    test = load_digits("test")
    printed = _ask(child, "d = digits(split = test)[5]")
    assert printed.startswith(f"d : R^64  shape (64,), example 5 of digits:test, label "
                              f"{test.y[5]}\n")
    printed = _ask(child, "Digits(d)")
    assert printed.startswith("R^10  shape (10,)\n")
    want = _digits_model().predict(test.x[5:6])[0]
    assert np.allclose(_values(printed), want, atol=1e-4)

    # Tab completes a name; the parameters stay the same from one evaluation to the next
    child.send("FeedF\t")
    child.expect_exact("FeedForward")
    child.sendline("(flatten(x)) : R^4")
    first = _answer(child)
    assert first.startswith("R^4  shape (4,)\n")
    child.send("\x1b[A")  # up: the line again
    child.expect_exact("FeedForward(flatten(x)) : R^4")
    child.send("\r")
    assert _answer(child) == first
    assert _ask(child, ":params").split("\n")[1].split() == ["feedforward.W", "R^(4,", "12)",
                                                            "48"]

    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "state" / "dp" / "repl_history").read_text()
    assert "+FeedForward(flatten(x)) : R^4\n" in history


def test_terminal_session_defines_redefines_and_reports_errors(tmp_path):
    child, _ = _spawn(tmp_path)
    typed = 0

    def ask(line: str) -> str:
        nonlocal typed
        typed += 1
        return _ask(child, line)

    assert ask(":load programs/digits_mlp.dp") == "loaded programs/digits_mlp.dp: Digits\n"
    params = ask(":params Digits").split("\n")
    assert params[0] == "Digits: R^64 -> R^10"
    assert params[2].split() == ["Digits.feedforward1.W", "R^(128,", "64)", "8,192"]
    assert params[-2].split() == ["total", "9,610"]

    v = _random_value("v", (4,))
    ask("v: R^4")
    assert ask("Double: R^n -> R^n") == ""  # waits for the definition
    assert ask("Double(x) = 2 * x") == ""  # and for its block, ended by an empty line
    assert ask("") == "defined Double: R^n -> R^n\n"
    assert np.allclose(_values(ask("Double(v)")), 2 * v, atol=1e-4)
    ask("Double(x) = 3 * x")
    assert ask("") == "redefined Double: R^n -> R^n\n"
    assert np.allclose(_values(ask("Double(v)")), 3 * v, atol=1e-4)
    ask("Double(x) = 3 * y")
    error = ask("")
    assert error.startswith("error[name]: unknown name 'y'\n")
    assert f" {typed - 1} | Double(x) = 3 * y\n" in error
    assert np.allclose(_values(ask("Double(v)")), 3 * v, atol=1e-4)  # the old one stays

    for line in ("Affine: R^n -> R^m", "Affine(x) = W x + b", "  param W: R^(m, n) ~ glorot",
                 "  param b: R^m ~ zeros"):
        ask(line)
    assert ask("") == "defined Affine: R^n -> R^m\n"
    assert ask("Affine(v) : R^3").startswith("R^3  shape (3,)\n")

    error = ask("Digits(v)")
    width = len(str(typed))
    assert error == (
        "error[shape]: Digits expects R^64 here, but v is R^4\n"
        f"  --> <repl>:{typed}:8\n"
        f" {' ' * width} |\n"
        f" {typed} | Digits(v)\n"
        f" {' ' * width} |        ^\n"
        "   = note: 64 is Digits's input size, declared at programs/digits_mlp.dp:4 "
        "(Digits: R^64 -> R^10)\n")
    assert ask("Pending: R^n -> R^n") == ""
    child.send("\x03")  # Ctrl-C drops the declaration being typed
    child.expect_exact(PROMPT_STARTS)
    assert ask(":type v") == "v : R^4\n"  # and it goes on

    child.sendline(":quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# --- through a pipe ---------------------------------------------------------------------------
def _pipe(text: str, *files: str):
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "repl", *files],
                          input=text, capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_piped_lines_print_plain_answers():
    code, out, err = _pipe("x: R^12\n:type FeedForward(x) : R^8\n:type relu(x) * 2\n"
                           "Twice: R^n -> R^n\nTwice(x) = x + x\n")
    lines = out.split("\n")
    assert lines[0] == "x : R^12  shape (12,), standard normal (seed 0)"
    assert lines[-4:] == ["FeedForward(x) : R^8", "relu(x) * 2 : R^12",
                          "defined Twice: R^n -> R^n", ""]  # defined at the end of input
    assert (code, err) == (0, "")
    assert "\x1b" not in out and "dp>" not in out


def test_a_loaded_program_runs_with_its_trained_parameters(tmp_path):
    program = tmp_path / "digits.dp"
    shutil.copy(ROOT / "programs" / "digits_mlp.dp", program)
    program.write_text(program.read_text().replace("epochs 20", "epochs 2"))
    assert dp_here("train", str(program))[0] == 0
    code, out, err = _pipe("x = digits(split = test)[5]\nDigits(x)\n", str(program))
    assert (code, err) == (0, "")
    ckpt = tmp_path / "digits.safetensors"
    assert f"Digits runs with the parameters trained in {ckpt} (step 94)\n" in out
    model = Model(load([str(program)]), "Digits")
    load_trained(model, str(ckpt))
    want = model.predict(load_digits("test").x[5:6])[0]
    got = _values(out.split("Digits runs")[1].split("\n", 3)[3])
    assert np.allclose(got, want, atol=1e-4) and got.argmax() == 3


def test_piped_errors_go_on_and_set_the_exit_status():
    code, out, err = _pipe("v = digits(split = test)[0]\nDigits(v) @ 2\n:seed x\nsum(v) * 0\n"
                           ":params Nope\n", "programs/digits_mlp.dp")
    assert out.endswith("R  shape ()\n0.\n")
    assert err.count("error[") == 3 and "Traceback" not in err
    assert "error[shape]: matmul needs vectors, matrices or stacks of matrices" in err
    assert "error[usage]: the seed is a whole number" in err
    assert "error[name]: unknown module 'Nope'" in err
    assert code == 1


# --- in process -------------------------------------------------------------------------------
def _session() -> repl.Session:
    return repl.Session(io.StringIO(), io.StringIO())


def test_an_unexpected_exception_is_an_internal_error_and_the_session_goes_on(monkeypatch):
    s = _session()
    s.feed("v: R^3")
    monkeypatch.setattr(repl, "Model", lambda *a, **k: 1 / 0)
    s.feed("v + 1")
    monkeypatch.undo()
    s.feed("v + 1")
    err = s.err.getvalue()
    assert err.startswith("error[internal]: ZeroDivisionError: division by zero\n")
    assert "Traceback" not in err
    assert s.out.getvalue().count("\nR^3  shape (3,)\n") == 1  # once, after the error


def test_a_module_that_writes_token_by_token_runs_as_model_runs_it():
    s = _session()
    for line in ("Reverse: Token[10]^6 -> Token[10]^6",
                 "Reverse(ts) = SequenceToSequence(ts; d = 8, layers = 1, heads = 2, ff = 16)",
                 "", "t: Token[10]^6", "y = Reverse(t)"):
        s.feed(line)
    assert s.err.getvalue() == ""
    model = Model(s.tprog, "Reverse")
    model.init(0)
    want = model.predict(s.values["t"].array[None]).argmax(axis=-1)[0]
    assert s.values["y"].type == s.values["t"].type
    assert np.array_equal(s.values["y"].array, want)


def test_names_and_values_that_cannot_be():
    s = _session()
    for line in ("Digits: R^64 -> R^10", "Digits(x) = FeedForward(x; act = identity)", "",
                 "Digits = 3", "big: R^(100000, 100000)", "t: Token[10]^5",
                 "i = digits(split = test)[0] : R^(1, 8, 8)", "j = digits(split = test)[297]"):
        s.feed(line)
    err = s.err.getvalue()
    assert "error[name]: Digits is a module; a value needs another name" in err
    assert "error[resource]: R^(100000, 100000) needs 37.3 GiB" in err
    assert "error[value]: digits:test has 297 examples, numbered 0 to 296" in err
    assert s.values["t"].array.dtype == np.int64 and s.values["t"].array.max() < 10
    assert s.values["i"].type.shape == (1, 8, 8)
    assert s.names()[:3] == ["AddNorm", "AlexNet", "Attention"] and "t" in s.names()


@pytest.mark.parametrize("line, message", [
    ("FeedForward(x", "error[syntax]: unexpected end of input; expected ')'"),
    ("Foo: R^n ->", "error[syntax]: unexpected end of line"),
    (":frobnicate", "error[usage]: unknown command ':frobnicate'"),
])
def test_syntax_errors_point_at_the_input(line, message):
    s = _session()
    s.feed(line)
    err = s.err.getvalue()
    assert err.startswith(message) and "  --> <repl>:1:" in err
    assert f" 1 | {line}\n" in err


def test_every_call_in_an_expression_has_the_parameters_of_a_model_of_its_callee():
    s = _session()
    for line in ("Mix: (R^3, R^3) -> R^3", "Mix(a, b) = W a + b", "  param W: R^(3, 3) ~ glorot",
                 "", "u: R^3", "v: R^3", "y = Mix(u, v) - 2 * Mix(v, u)"):
        s.feed(line)
    assert s.err.getvalue() == ""
    model = Model(s.tprog, "Mix")  # a module of two arguments, run by the same class
    model.init(0)
    u, v = s.values["u"].array[None], s.values["v"].array[None]
    want = model.predict(u, v)[0] - 2 * model.predict(v, u)[0]
    np.testing.assert_allclose(s.values["y"].array, want, rtol=1e-5)
    assert not model.load_part("Mix.", {"V": np.zeros((3, 3), np.float32)})  # not its paths
    assert model.load_part("Mix.", {"W": np.eye(3, dtype=np.float32)})
    np.testing.assert_allclose(model.predict(u, v)[0], u[0] + v[0], rtol=1e-6)


def test_load_completes_programs_and_folders(tmp_path, monkeypatch):
    """After `:load `, Tab offers the .dp files and folders there, and nothing else."""
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from dp.interpreter.commands.repl import Session
    from dp.interpreter.commands.repl_terminal import _Names

    (tmp_path / "net.dp").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "nested").mkdir()
    monkeypatch.chdir(tmp_path)
    names = _Names(Session(io.StringIO(), io.StringIO()))

    def offered(text: str) -> set[str]:
        doc = Document(text)
        return {text[:len(text) + c.start_position] + c.text
                for c in names.get_completions(doc, CompleteEvent(completion_requested=True))}

    assert offered(":load n") == {":load net.dp", ":load nested"}
    assert offered(":load ne") == {":load net.dp", ":load nested"}
    assert offered(":lo") == {":load"}


def test_a_modules_name_shows_how_to_call_it_with_its_defaults():
    """The configuration a module takes, with its defaults, as a call (`k` has none)."""
    s = _session()
    for name in ("FeedForward", "Transformer", "StridedConv", "SequenceRNN"):
        s.feed(name)
    lines = [line for line in s.out.getvalue().splitlines() if "called as" in line]
    assert lines == [
        "  called as FeedForward(x; act = relu)",
        "  called as Transformer(xs; layers = 2, heads = 4, ff = 256, dropout = 0.0, "
        "mask = identity)",
        "  called as StridedConv(x; k, s = 1, p = 0, act = relu)",
        "  called as SequenceRNN(xs; cell: RNN)"]
