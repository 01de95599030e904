"""Golden error messages: `dp check` on each program of tests/programs/errors/ prints exactly the
.err file beside it and exits with code 1. They run in-process (`dp_here`); a few tests run the
real command in a subprocess, for its exit codes and to show that no traceback reaches a user
without --debug."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dp_here, run_dp
from dp.dsl.errors import DpErrors
from dp.interpreter.commands import cli, handlers

ERRORS = sorted((ROOT / "tests" / "programs" / "errors").glob("*.dp"))
SHAPE = "tests/programs/errors/shape.dp"


@pytest.mark.parametrize("program", ERRORS, ids=lambda p: p.stem)
def test_golden_error(program: Path):
    code, out, err = dp_here("check", str(program.relative_to(ROOT)), cwd=ROOT)
    expected = program.with_suffix(".err").read_text()
    assert err == expected
    assert code == 1 and out == ""
    assert "Traceback" not in err


def test_every_error_kind_has_a_golden_file():
    kinds = {p.with_suffix(".err").read_text().split("]")[0] for p in ERRORS}
    assert {"error[syntax", "error[name", "error[shape", "error[type", "error[arity"} <= kinds


def _rendered_errors(program: Path, monkeypatch) -> list:
    """The errors `dp check PROGRAM` renders, as DpError objects (with their spans)."""
    seen, render = [], cli.format_error

    def record(err, *args, **kwargs):
        seen.extend(err.errors if isinstance(err, DpErrors) else [err])
        return render(err, *args, **kwargs)

    monkeypatch.setattr(cli, "format_error", record)
    assert dp_here("check", str(program.relative_to(ROOT)), cwd=ROOT)[0] == 1
    return seen


@pytest.mark.parametrize("program", ERRORS, ids=lambda p: p.stem)
def test_caret_count_is_the_span_length(program: Path, monkeypatch):
    """Each `-->` line names the error's span, and the carets under the source line start at
    its column and are as many as its columns (one for an empty span; to the end of the line
    for a span of several lines)."""
    spans = [e.span for e in _rendered_errors(program, monkeypatch) if e.span is not None]
    lines = program.with_suffix(".err").read_text().splitlines()
    arrows = [i for i, line in enumerate(lines) if line.startswith("  --> ")]
    assert len(arrows) == len(spans) >= 1, program
    for i, span in zip(arrows, spans):
        where = re.fullmatch(r"  --> (.+):(\d+):(\d+)", lines[i])
        assert where and (where[1], int(where[2]), int(where[3])) == (
            span.file, span.line, span.col)
        assert lines[i + 1].strip() == "|" and lines[i + 2].startswith(f" {span.line} | ")
        gutter, carets = lines[i + 3].split("|", 1)
        assert gutter.strip() == "" and carets[0] == " "
        assert len(carets) - len(carets.lstrip(" ")) - 1 == span.col - 1
        assert set(carets.strip()) == {"^"}
        if span.end_line == span.line:
            assert len(carets.strip()) == max(1, span.end_col - span.col), program
        else:  # to the end of the first line
            source = lines[i + 2].split(" | ", 1)[1]
            assert len(carets.strip()) == len(source) - span.col + 1, program


def test_every_golden_has_the_error_layout(monkeypatch):
    """Every golden, walked against the errors `dp check` raised for it: each starts
    `error[kind]: `, has a `--> file:L:C` line naming the error's span, L within the file
    (never -1, even at the end of the file), the source line as it is in the file (tabs shown
    as one space), carets under it as many as the span's columns (one for an empty span; to
    the line's end for a span of several lines), exit code 1 and no traceback."""
    assert len(ERRORS) >= 80
    for program in ERRORS:
        golden = program.with_suffix(".err").read_text()
        assert "Traceback" not in golden, program
        errors = _rendered_errors(program, monkeypatch)  # asserts exit code 1
        heads = [i for i, line in enumerate(golden.splitlines()) if line.startswith("error")]
        assert heads and heads[0] == 0 and len(heads) == len(errors), program
        lines = golden.splitlines() + [""]
        for head, err in zip(heads, errors):
            assert re.match(r"error\[\w+\]: ", lines[head]), (program, lines[head])
            assert lines[head] == f"error[{err.kind}]: {err.message.splitlines()[0]}"
            span = err.span
            if span is None:
                assert not lines[head + 1].startswith("  --> "), program
                continue
            source = (ROOT / span.file if not Path(span.file).is_absolute() else
                      Path(span.file)).read_text(encoding="utf-8").split("\n")
            assert 1 <= span.line <= len(source) and span.col >= 1, (program, span)
            assert lines[head + 1] == f"  --> {span.file}:{span.line}:{span.col}", program
            written = source[span.line - 1].removesuffix("\r").expandtabs(1)
            gutter = " " * len(str(span.line))
            assert lines[head + 2:head + 4] == [f" {gutter} |", f" {span.line} | {written}"]
            carets = lines[head + 4]
            assert carets.startswith(f" {gutter} | {' ' * (span.col - 1)}^"), program
            count = len(carets) - len(f" {gutter} | {' ' * (span.col - 1)}")
            width = span.end_col - span.col if span.end_line == span.line else \
                len(written) + 1 - span.col
            assert carets.endswith("^" * count) and count == max(1, width), (program, span)


def test_missing_program_file():
    code, out, err = dp_here("check", "no/such/file.dp", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == "error[file]: no such file: no/such/file.dp\n"


def test_bad_command_line_is_a_usage_error():
    code, _, err = dp_here("train", cwd=ROOT)
    assert code == 2
    assert err.startswith("error[usage]: the following arguments are required: file")


def _explode(args):
    raise ZeroDivisionError("division by zero")


def test_a_bug_is_an_internal_error_without_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(handlers, "check", _explode)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, err = dp_here("check", SHAPE, cwd=ROOT)
    (log,) = tmp_path.glob("dp-internal-error-*.log")  # a file of its own, this user's only
    assert (code, out) == (4, "")
    assert err == ("error[internal]: ZeroDivisionError: division by zero\n"
                   f"   = note: this is a bug in dp; the traceback is in {log}\n")
    assert "Traceback" in log.read_text() and "_explode" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0
    dp_here("check", SHAPE, cwd=ROOT)  # a second error does not overwrite the first's log
    assert len(list(tmp_path.glob("dp-internal-error-*.log"))) == 2


def test_debug_shows_the_traceback_of_a_bug(monkeypatch):
    monkeypatch.setattr(handlers, "check", _explode)
    code, out, err = dp_here("--debug", "check", SHAPE, cwd=ROOT)
    assert (code, out) == (1, "")
    assert err.startswith("Traceback") and err.endswith("ZeroDivisionError: division by zero\n")


def test_in_process_runs_leave_the_process_as_they_found_it(monkeypatch, tmp_path):
    def meddle(args):
        os.chdir(tmp_path)
        os.environ["DP_TEST_MEDDLED"] = "1"
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        np.set_printoptions(precision=2)
        np.seterr(all="raise")
        sys.setrecursionlimit(sys.getrecursionlimit() + 1)
        print("meddled")
        return 0

    before = (Path.cwd(), signal.getsignal(signal.SIGINT), np.get_printoptions(),
              np.geterr(), sys.getrecursionlimit())
    monkeypatch.setattr(handlers, "check", meddle)
    assert dp_here("check", SHAPE, cwd=ROOT) == (0, "meddled\n", "")
    assert "DP_TEST_MEDDLED" not in os.environ
    assert (Path.cwd(), signal.getsignal(signal.SIGINT), np.get_printoptions(),
            np.geterr(), sys.getrecursionlimit()) == before



def test_in_process_runs_show_warnings_on_stderr(monkeypatch):
    def warn(args):
        warnings.warn("overflow in exp", RuntimeWarning)
        return 0

    monkeypatch.setattr(handlers, "check", warn)
    code, out, err = dp_here("check", SHAPE, cwd=ROOT)
    assert (code, out) == (0, "")
    assert err.endswith(": RuntimeWarning: overflow in exp\n  warnings.warn(\"overflow in exp\", "
                        "RuntimeWarning)\n")


# The real command, in a subprocess: its exit codes, and no traceback without --debug.

def test_the_command_prints_a_golden_error():
    code, out, err = run_dp("check", SHAPE, cwd=ROOT)
    assert (code, out, err) == (1, "", (ROOT / SHAPE).with_suffix(".err").read_text())


def test_the_command_exits_2_on_a_usage_error():
    code, out, err = run_dp("train", cwd=ROOT)
    assert (code, out) == (2, "")
    assert err.startswith("error[usage]: the following arguments are required: file")


def test_debug_shows_the_traceback():
    code, _, err = run_dp("--debug", "check", SHAPE, cwd=ROOT)
    assert code == 1 and "Traceback" in err and "error[shape]" in err


BUGGY = """\
import sys
from dp.interpreter.commands import cli, handlers
def explode(args):
    raise ZeroDivisionError("division by zero")
handlers.check = explode
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_the_command_exits_4_on_a_bug_and_logs_the_traceback(debug, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", BUGGY, *(["--debug"] if debug else []),
                           "check", SHAPE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    logs = list(tmp_path.glob("dp-internal-error-*.log"))
    if debug:  # the exception is not caught: Python prints it and exits with 1
        assert proc.returncode == 1 and not logs
        assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr
        return
    (log,) = logs
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr == ("error[internal]: ZeroDivisionError: division by zero\n"
                           f"   = note: this is a bug in dp; the traceback is in {log}\n")
    assert "Traceback" in log.read_text() and "explode" in log.read_text()


def test_a_byte_order_mark_at_the_start_of_a_file_is_not_text(tmp_path):
    """Some editors begin UTF-8 files with a byte-order mark: dp reads past it."""
    program = tmp_path / "bom.dp"
    program.write_bytes(b"\xef\xbb\xbfNet: R^4 -> R^4\nNet(x) = relu(x)\n")
    code, out, err = dp_here("check", program)
    assert (code, err) == (0, "") and out.startswith(f"{program}: ok (1 module)")
