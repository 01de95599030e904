"""docs/tutorial.md cannot go stale: every ```dp block is a program of docs/tutorial/ (all of
it) or a passage of the standard library, word for word; every program checks; every command
of a ```console block runs as the page shows it. `dp check`, `dp show` and `dp repl` print
exactly the lines shown (a line `...` stands for any number of lines); `dp train` trains for
two steps, so only what does not depend on the training is compared: the first line, and the
run block's reports with their numbers masked.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil

import pytest
from conftest import ROOT, dp_here
from dp.dsl.blocks import REPORTS

TUTORIAL = ROOT / "docs" / "tutorial.md"
PROGRAMS = ROOT / "docs" / "tutorial"
STDLIB = ROOT / "stdlib"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
ELLIPSIS = "..."
BANNER = "dp repl: the standard library is loaded."  # only on a terminal
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?")


def _blocks(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(TUTORIAL.read_text()) if m.group(1) == lang]


def _commands() -> list[tuple[str, list[str]]]:
    """Each `$ COMMAND` of the console blocks with the lines shown after it."""
    commands = []
    for block in _blocks("console"):
        assert block.startswith("$ "), f"a console block starts with output:\n{block}"
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
    return commands


COMMANDS = _commands()
IDS = [f"{i + 1:02d}-{' '.join(cmd.split()[:3])}" for i, (cmd, _) in enumerate(COMMANDS)]


def _matches(shown: list[str], printed: str) -> bool:
    """The printed text is the lines shown, each `...` line standing for any lines."""
    pattern = "".join("(?:.*\n)*?" if line == ELLIPSIS else re.escape(line + "\n")
                      for line in shown)
    return re.fullmatch(pattern, printed) is not None


def _show(shown: list[str], printed: str) -> str:
    return "shown:\n" + "\n".join(shown) + "\n\nprinted:\n" + printed


# --- the programs -----------------------------------------------------------------------------
def test_every_program_is_shown_whole_and_in_order():
    files = {p.name: p.read_text() for p in sorted(PROGRAMS.glob("*.dp"))}
    assert len(files) == 8
    shown = [b for b in _blocks("dp") if b in files.values()]
    names = [name for b in shown for name, text in files.items() if text == b]
    assert names == sorted(files)  # each once, in the order of the lecture


def test_every_other_dp_block_is_a_passage_of_the_standard_library():
    files = {p.read_text() for p in PROGRAMS.glob("*.dp")}
    stdlib = "\n".join(p.read_text() for p in sorted(STDLIB.glob("*.dp")))
    passages = [b for b in _blocks("dp") if b not in files]
    assert passages
    for block in passages:
        assert block in stdlib, f"not in stdlib/*.dp word for word:\n{block}"


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.dp")), ids=lambda p: p.name)
def test_every_program_checks(path):
    code, out, err = dp_here("check", path.relative_to(ROOT), cwd=ROOT)
    assert (code, err) == (0, "")
    assert out.startswith(f"docs/tutorial/{path.name}: ok (")


def test_every_program_is_trained_on_the_page():
    trained = {shlex.split(cmd)[2] for cmd, _ in COMMANDS if cmd.startswith("dp train ")}
    assert trained == {f"docs/tutorial/{p.name}" for p in PROGRAMS.glob("*.dp")}


def test_the_images_of_the_page_exist():
    images = re.findall(r'src="(tutorial/[^"]+)"', TUTORIAL.read_text())
    assert images
    for image in images:
        assert (ROOT / "docs" / image).is_file(), image


# --- the commands -----------------------------------------------------------------------------
@pytest.mark.parametrize("command, shown", COMMANDS, ids=IDS)
def test_a_command_prints_what_the_page_shows(command, shown, tmp_path, monkeypatch):
    args = shlex.split(command)
    assert args[0] == "dp"
    run = {"check": _check, "train": _train, "show": _draw, "repl": _repl}[args[1]]
    run(args[1:], shown, tmp_path, monkeypatch)


def _check(args, shown, tmp_path, monkeypatch):
    code, out, err = dp_here(*args, cwd=ROOT)
    assert (code, err) == (0, "")
    assert _matches(shown, out), _show(shown, out)


def _train(args, shown, tmp_path, monkeypatch):
    """Two steps into tmp_path; the first line exactly, each report with its numbers masked."""
    checkpoint = tmp_path / "model.safetensors"
    code, out, err = dp_here(*args, "--steps", "2", "--checkpoint", checkpoint, cwd=ROOT)
    assert (code, err) == (0, ""), out
    assert checkpoint.is_file()
    printed = out.splitlines()
    assert printed[0] == shown[0]
    saved = [line for line in shown if line.startswith("trained ")]
    assert [line.rsplit("; ", 1)[-1] for line in saved] == \
        ["saved " + args[1].replace(".dp", ".safetensors")]  # where a full run saves
    reports = [line for line in shown if line.split("(", 1)[0] in REPORTS]
    assert reports, "the page shows no report of the run block"
    masked = {NUMBER.sub("#", line) for line in printed}
    for line in reports:
        assert NUMBER.sub("#", line) in masked, _show([line], out)


def _draw(args, shown, tmp_path, monkeypatch):
    """`dp show ... -o docs/tutorial/NAME.svg` draws into tmp_path instead."""
    at = args.index("-o") + 1
    image = args[at]
    assert (ROOT / image).is_file()
    args[at] = str(tmp_path / "image.svg")
    code, out, err = dp_here(*args, cwd=ROOT)
    assert (code, err) == (0, "")
    assert _matches(shown, out.replace(args[at], image)), _show(shown, out)
    assert (tmp_path / "image.svg").read_text().startswith("<?xml")


def _repl(args, shown, tmp_path, monkeypatch):
    """The session's lines typed after `dp> ` (and `... `) are piped in, in a copy of the
    programs without checkpoints; what it prints, errors too, is the rest of the lines."""
    from dp.interpreter.commands.repl import MORE, PROMPT, Session

    shutil.copytree(PROGRAMS, tmp_path / "docs" / "tutorial",
                    ignore=shutil.ignore_patterns("*.safetensors*", "*.metrics.jsonl"))
    monkeypatch.chdir(tmp_path)
    typed = [line[len(PROMPT):] for line in shown if line.startswith((PROMPT, MORE))]
    answers = [line for line in shown
               if not line.startswith((PROMPT, MORE, BANNER)) and line != PROMPT.rstrip()]
    out = io.StringIO()
    session = Session(out=out, err=out)
    for path in args[1:]:
        session.guard(session.load, path)
    for line in typed:
        if not session.feed(line):
            break
    if session.pending:
        session.finish()
    assert not session.failed or any(a.startswith("error[") for a in answers)
    assert _matches(answers, out.getvalue()), _show(answers, out.getvalue())
