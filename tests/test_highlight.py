"""Highlighting dp: the Pygments lexer (dsl/pygments_lexer.py) on every program, the token
types it gives, its plugin entry point, the TextMate grammar of editors/vscode/ (run by a small
TextMate engine below and held to the lexer), and errors coloured only on a terminal
(interpreter/commands/colour.py)."""

from __future__ import annotations

import io
import json
import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import ROOT, dp_here
from dp.dsl.blocks import LOSSES, OPTIMIZERS, REPORTS, SETTINGS, SOURCES, TEXTS
from dp.dsl.builtins import BUILTINS
from dp.dsl.errors import DpError, DpErrors, Span, format_error
from dp.dsl.parser import parse
from dp.dsl.pygments_lexer import KEYWORDS, TYPES, DpLexer
from dp.dsl.signatures import INITIALIZERS
from dp.interpreter.commands import colour
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EDITORS = ROOT / "editors" / "vscode"
GRAMMAR = json.loads((EDITORS / "syntaxes" / "dp.tmLanguage.json").read_text())
LIBRARY = sorted([*(ROOT / "stdlib").glob("*.dp"), *(ROOT / "programs").glob("*.dp")])
PROGRAMS = LIBRARY + sorted((ROOT / "tests" / "programs").glob("*/*.dp"))

SAMPLE = """\
# a sample of every kind of token
Net: R^(1, 8, 8) -> R^10
Net(x; act = relu) = FeedForward(flatten(x); act = identity) * 2.5e-1
  param Wq: R^(10, 10) ~ glorot
  h = Wq W x

abstract Seq: Token[V]^n -> (R^d)^n
Cell: (R^h, R^d) -> R^h implements RNN
Cell(h, x) = tanh(U h + V x + b)
  carry c: R^h = previous
  kernel rnn_scan

train Net on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 32

run:
  print accuracy(Net, csv("data.csv", label = last))
"""


def _tokens(text: str) -> list[tuple[int, int, object, str]]:
    """(line, column from 1, token type, text) of every token but blanks."""
    out, line, col = [], 1, 1
    for _, token, value in DpLexer().get_tokens_unprocessed(text):
        if value.strip():
            out.append((line, col, token, value))
        for ch in value:
            line, col = (line + 1, 1) if ch == "\n" else (line, col + 1)
    return out


def _type_of(text: str, word: str, line: int) -> object:
    found = [t for ln, _, t, v in _tokens(text) if v == word and ln == line]
    assert found, f"{word!r} is not a token of line {line}"
    return found[0]


# --- the Pygments lexer -----------------------------------------------------------------------
@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_program_lexes_whole_without_error_tokens(path: Path):
    text = path.read_text()
    try:
        parse(text, str(path))
    except DpError:
        pytest.skip("not a program that parses (a golden syntax error)")
    tokens = list(DpLexer().get_tokens_unprocessed(text))
    assert [(i, v) for i, t, v in tokens if t is Error] == []
    assert "".join(v for _, _, v in tokens) == text


def test_each_kind_of_token_gets_its_type():
    t = SAMPLE
    assert _type_of(t, "# a sample of every kind of token", 1) is Comment.Single
    assert _type_of(t, "Net", 2) is Name.Class
    assert _type_of(t, "R", 2) is Keyword.Type and _type_of(t, "Token", 7) is Keyword.Type
    assert _type_of(t, "->", 2) is Operator and _type_of(t, "^", 2) is Operator
    assert _type_of(t, "8", 2) is Number.Integer and _type_of(t, "2.5e-1", 3) is Number.Float
    assert _type_of(t, "relu", 3) is Name.Builtin and _type_of(t, "flatten", 3) is Name.Builtin
    assert _type_of(t, "FeedForward", 3) is Name.Class
    assert _type_of(t, "identity", 3) is Name  # a module of the standard library
    assert _type_of(t, "param", 4) is Keyword.Declaration
    assert _type_of(t, "glorot", 4) is Name.Builtin.Pseudo
    # a capitalised name declared as a parameter, and single capitals, are not modules
    assert _type_of(t, "Wq", 4) is Name.Variable and _type_of(t, "Wq", 5) is Name.Variable
    assert _type_of(t, "W", 5) is Name and _type_of(t, "V", 7) is Name
    assert _type_of(t, "abstract", 7) is Keyword.Declaration
    assert _type_of(t, "implements", 8) is Keyword and _type_of(t, "RNN", 8) is Name.Class
    assert _type_of(t, "carry", 10) is Keyword.Declaration
    assert _type_of(t, "previous", 10) is Name.Builtin.Pseudo
    assert _type_of(t, "kernel", 11) is Keyword.Declaration
    assert _type_of(t, "rnn_scan", 11) is Name.Builtin.Pseudo
    # train and run blocks: keywords where the grammar puts them, settings, their vocabulary
    heads = [(ln, col, tok) for ln, col, tok, v in _tokens(t) if v == "train"]
    assert heads == [(13, 1, Keyword), (13, 29, Name)]  # `split = train` is a value
    assert _type_of(t, "on", 13) is Keyword and _type_of(t, "digits", 13) is Name.Builtin.Pseudo
    for setting in ("loss", "optimizer", "batch"):
        assert _type_of(t, setting, 14) is Name.Attribute
    assert _type_of(t, "cross_entropy", 14) is Name.Builtin.Pseudo
    assert _type_of(t, "sgd", 14) is Name.Builtin.Pseudo and _type_of(t, "lr", 14) is Name
    assert _type_of(t, "run", 16) is Keyword and _type_of(t, "print", 17) is Keyword
    assert _type_of(t, "accuracy", 17) is Name.Builtin.Pseudo
    assert _type_of(t, '"data.csv"', 17) is String.Double
    # outside a train block a setting's name is a name
    assert _type_of("x = loss + seed\n", "seed", 1) is Name


def test_what_the_grammar_does_not_have_is_an_error_token():
    assert [v for _, _, t, v in _tokens("Net(x) = x $ 2\n") if t is Error] == ["$"]


def test_names_come_from_the_checkers_tables_and_the_grammar():
    for name in BUILTINS:
        assert _tokens(f"y = {name}(x)\n")[2][2] is Name.Builtin, name
    grammar = (ROOT / "dsl" / "grammar.lark").read_text()
    assert set(re.findall(r'"([A-Za-z]+)"', grammar)) == set(KEYWORDS) | set(TYPES)


def test_the_repl_lexer_knows_the_session_commands():
    lexer = colour.repl_lexer()()
    typed = [(t, v) for _, t, v in lexer.get_tokens_unprocessed(":type relu(x) : R^8")]
    assert typed[:2] == [(Punctuation, ":"), (Keyword.Pseudo, "type")]
    assert (Name.Builtin, "relu") in typed
    loaded = [(t, v) for _, t, v in lexer.get_tokens_unprocessed(":load programs/a-b.dp")]
    assert loaded[-1] == (String, "programs/a-b.dp")
    assert [v for t, v in typed + loaded if t is Error] == []


def test_the_pygments_entry_point_finds_the_lexer():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("dp"), DpLexer)
    assert isinstance(get_lexer_for_filename("digits.dp"), DpLexer)
    proc = subprocess.run([sys.executable, "-m", "pygments", "-l", "dp", "-f", "html",
                           str(ROOT / "programs" / "digits_mlp.dp")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '<span class="nc">FeedForward</span>' in proc.stdout
    assert '<span class="k">train</span>' in proc.stdout


def test_only_colouring_imports_pygments():
    code = ("import sys; import dp.dsl.checker, dp.dsl.loader, dp.interpreter.commands.cli; "
            "print('pygments' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout == "False\n", proc.stderr


# --- the TextMate grammar ---------------------------------------------------------------------
def _patterns(rule: dict) -> list[dict]:
    """A rule's patterns with every `include` of the repository expanded."""
    out = []
    for p in rule.get("patterns", []):
        if "include" in p:
            out.extend(_patterns({"patterns": [GRAMMAR["repository"][p["include"][1:]]]}))
        elif "match" in p or "begin" in p:
            out.append(p)
        else:
            out.extend(_patterns(p))
    return out


def _scoped(match: re.Match, rule: dict, captures: dict, line: int, out: list) -> None:
    if "name" in rule and match.group():
        out.append((line, match.start() + 1, match.group(), rule["name"]))
    for group, capture in captures.items():
        if match.group(int(group)):
            out.append((line, match.start(int(group)) + 1, match.group(int(group)),
                        capture["name"]))


def textmate(text: str) -> list[tuple[int, int, str, str]]:
    """(line, column, text, scope) of what the grammar scopes: TextMate's rules, line by line,
    with Python's `re` standing in for Oniguruma (the grammar uses what both have)."""
    out, stack = [], [GRAMMAR]  # the rules whose `begin` matched and `end` has not
    for n, line in enumerate(text.split("\n"), 1):
        line += "\n"
        pos = 0
        while pos < len(line):
            top = stack[-1]
            best, which = None, None
            for p in _patterns(top):
                m = re.compile(p.get("match") or p["begin"]).search(line, pos)
                if m and (best is None or m.start() < best.start()):
                    best, which = m, p
            end = re.compile(top["end"]).search(line, pos) if "end" in top else None
            if end and (best is None or end.start() <= best.start()):
                stack.pop()
                pos = end.end()
                continue
            if best is None:
                break
            _scoped(best, which, which.get("captures") or which.get("beginCaptures", {}), n,
                    out)
            if "begin" in which:
                stack.append(which)
            pos = max(best.end(), pos + (best.end() == best.start()))
    return out


# what each Pygments token type is in the TextMate grammar
SCOPES = [(Keyword.Type, "storage.type."), (Keyword, "keyword.other."),
          (Keyword, "keyword.control."), (Name.Builtin.Pseudo, "support.function.data."),
          (Name.Builtin.Pseudo, "support.function.training."),
          (Name.Builtin.Pseudo, "support.function.report."),
          (Name.Builtin.Pseudo, "support.function.initializer."),
          (Name.Builtin.Pseudo, "support.function.kernel."),
          (Name.Builtin.Pseudo, "variable.language."), (Name.Builtin, "support.function.builtin."),
          (Name.Class, "entity.name.type.module."), (Name.Attribute, "variable.other.property."),
          (Comment, "comment."), (Number, "constant.numeric."), (String, "string.")]


def _kind(token) -> object | None:
    for t, _ in SCOPES:
        if token in t:
            return t
    return None


@pytest.mark.parametrize("path", ["SAMPLE", *LIBRARY],
                         ids=lambda p: p if p == "SAMPLE" else p.name)
def test_the_textmate_grammar_colours_as_the_lexer_does(path):
    """Keywords, types, builtins, modules, settings, comments, numbers and strings: the same
    words at the same places (the standard library and the programs)."""
    text = SAMPLE if path == "SAMPLE" else path.read_text()
    tokens = _tokens(text)
    params = {(ln, col) for ln, col, t, _ in tokens if t is Name.Variable}  # lexer only
    by_lexer = {(ln, col, v, _kind(t)) for ln, col, t, v in tokens if _kind(t) is not None}
    by_grammar = {(ln, col, v, next(t for t, s in SCOPES if scope.startswith(s)))
                  for ln, col, v, scope in textmate(text)
                  if any(scope.startswith(s) for _, s in SCOPES) and (ln, col) not in params}
    assert by_grammar == by_lexer


def test_the_textmate_grammar_names_what_the_language_has():
    repo = GRAMMAR["repository"]

    def words(rule: str) -> set[str]:
        return set(re.search(r"\\b\(([\w|]+)\)\\b", repo[rule]["match"]).group(1).split("|"))

    assert words("builtins") == set(BUILTINS)
    assert words("settings") == set(SETTINGS)
    assert words("training") == set(LOSSES) | set(OPTIMIZERS)
    assert words("sources") == set(SOURCES) | set(TEXTS)
    assert words("reports") == set(REPORTS)
    assert words("initializers") == set(INITIALIZERS)
    keywords = {v for _, _, v, scope in textmate(SAMPLE) if scope.startswith("keyword.")
                and not scope.startswith("keyword.operator")}
    types = {v for _, _, v, scope in textmate(SAMPLE) if scope.startswith("storage.type")}
    assert keywords == set(KEYWORDS) and types == set(TYPES)


def test_the_vscode_extension_is_complete():
    package = json.loads((EDITORS / "package.json").read_text())
    language, = package["contributes"]["languages"]
    grammar, = package["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "dp" and language["extensions"] == [".dp"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"] == "source.dp"
    assert (EDITORS / grammar["path"]).is_file()
    assert plistlib.loads(plistlib.dumps(GRAMMAR)) == GRAMMAR  # Sublime Text's form (README)
    config = json.loads((EDITORS / language["configuration"]).read_text())
    assert config["comments"] == {"lineComment": "#"}
    assert ["(", ")"] in config["brackets"] and ["[", "]"] in config["brackets"]


# --- errors in colour -------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


BAD = "Net: R^4 -> R^4\nNet(x) = relu(y)  # y is not defined\n"
PLAIN = ("error[name]: unknown name 'y'\n"
         "  --> bad.dp:2:15\n"
         "   |\n"
         " 2 | Net(x) = relu(y)  # y is not defined\n"
         "   |               ^")


def _error() -> DpError:
    return DpError("name", "unknown name 'y'", Span("bad.dp", 2, 15, 2, 16))


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert colour.wants_colour(_Terminal())
    assert not colour.wants_colour(io.StringIO()) and not colour.wants_colour(object())
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: colour stays on
    assert colour.wants_colour(_Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour.wants_colour(_Terminal())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not colour.wants_colour(_Terminal())


def test_a_coloured_error_is_the_plain_one_with_colour_added():
    sources = {"bad.dp": BAD}
    assert format_error(_error(), sources) == PLAIN
    coloured = colour.colour_error(_error(), sources)
    assert ANSI.sub("", coloured) == PLAIN
    lines = coloured.split("\n")
    assert lines[0].startswith("\x1b[1;31merror[name]:\x1b[0m")
    # the source line is highlighted: the module, the builtin and the comment each coloured
    assert re.search(r"\x1b\[[0-9;]+mNet\x1b", lines[3])
    assert re.search(r"\x1b\[[0-9;]+mrelu\x1b", lines[3])
    assert re.search(r"\x1b\[[0-9;]+m# y is not defined\x1b", lines[3])
    assert "\x1b[1;31m" in lines[4] and "^" in lines[4]


def test_a_coloured_source_line_is_coloured_in_its_file_and_keeps_tabs_and_crlf():
    text = "Net: R^4 -> R^4\r\nNet(x) = x\r\n\r\ntrain Net on digits(split = train):\r\n" \
           "  loss cross_entropy;\toptimizer sgd(lr = 0.1); batchsize 32\r\n"
    err = DpError("name", "unknown training setting 'batchsize'", Span("t.dp", 5, 47, 5, 56),
                  ("did you mean 'batch'?",))
    errors = DpErrors([err, _error()])
    sources = {"t.dp": text, "bad.dp": BAD}
    coloured = colour.colour_error(errors, sources)
    assert ANSI.sub("", coloured) == format_error(errors, sources)
    source = coloured.split("\n")[3]
    assert "\t" not in source and "\r" not in source
    # `optimizer` is a setting here (a train block), as the whole file tells
    setting = re.search(r"(\x1b\[[0-9;]+m)optimizer", source).group(1)
    assert re.search(re.escape(setting) + "loss", source)
    assert "\x1b[1m= note:\x1b[0m did you mean 'batch'?" in coloured


def test_an_error_whose_source_cannot_be_read_is_coloured_around_it(tmp_path):
    err = DpError("usage", "bad.dp has no run block", Span(str(tmp_path / "gone.dp"), 1, 1, 1, 2))
    assert ANSI.sub("", colour.colour_error(err)) == format_error(err)
    err = DpError("usage", "no file given")
    assert colour.colour_error(err) == "\x1b[1;31merror[usage]:\x1b[0m\x1b[1m no file given\x1b[0m"


def test_dp_check_prints_plain_errors_to_a_pipe(write_program):
    path = write_program(BAD)
    code, out, err = dp_here("check", path)
    assert code == 1 and out == ""
    assert err == PLAIN.replace("bad.dp", path) + "\n"


def _terminal_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return dict(env, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", **extra)


@pytest.mark.parametrize("no_color", ["", "1"])
def test_dp_check_on_a_terminal_colours_unless_no_color(tmp_path, no_color):
    (tmp_path / "bad.dp").write_text(BAD)
    out, code = pexpect.run(f"{sys.executable} -m dp.interpreter.commands.cli check bad.dp",
                            cwd=str(tmp_path), env=_terminal_env(NO_COLOR=no_color),
                            withexitstatus=True, encoding="utf-8", timeout=120)
    assert code == 1
    out = out.replace("\r\n", "\n")
    if no_color:
        assert out == PLAIN + "\n"
    else:
        assert "\x1b[" in out and ANSI.sub("", out) == PLAIN + "\n"


def test_the_repl_colours_the_line_typed_and_its_errors(tmp_path):
    child = pexpect.spawn(sys.executable, ["-m", "dp.interpreter.commands.cli", "repl"],
                          env=_terminal_env(HOME=str(tmp_path)), cwd=str(tmp_path),
                          encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect_exact("\x1b[?2004h")  # the first prompt
    child.sendline("relu(nope)")
    child.expect_exact("\x1b[1;31merror[name]:")
    echoed = child.before
    child.expect_exact("\x1b[?2004h")
    shown = ANSI.sub("", child.before).replace("\r\n", "\n")
    child.sendline(":quit")
    child.expect(pexpect.EOF)
    assert re.search(r"\x1b\[[0-9;]+mrelu", echoed)  # the builtin coloured as it was typed
    assert "unknown name 'nope'" in shown and " 1 | relu(nope)\n" in shown
