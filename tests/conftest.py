"""Shared test helpers: run the `dp` CLI in-process or as a subprocess, write programs, and
tell whether an error's span lies inside its source (the fuzzers).

`dp_here` runs the command in this process (no Python start-up, imports or loading of cached
Numba kernels per call: a second or more saved each time) and prints exactly what `run_dp`, the
real command in a subprocess, prints. Keep `run_dp` for what needs a process of its own:
signals, kills, terminals, environment variables, cold caches, and the few tests of the real
command's exit codes.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from dp.dsl.errors import DpError  # noqa: E402
from dp.interpreter.core import plan as _plan  # noqa: E402

_plan.CHECK_PLANS = True  # every plan lowered in the tests is re-checked (plan.typecheck_plan)


def run_dp(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 600):
    """`dp ARGS` as a user runs it: a subprocess, returning (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def dp_here(*args: str | os.PathLike, cwd: str | os.PathLike | None = None):
    """`dp ARGS` run in this process, returning what `run_dp` returns: (exit code, stdout,
    stderr). The process-wide state a command may change is put back afterwards."""
    # Imported first, so that their import-time effects (NUMBA_CACHE_DIR) are kept, as in a
    # process that goes on running.
    from dp.interpreter.commands import cli, handlers  # noqa: F401

    out, err = io.StringIO(), io.StringIO()
    saved = _ProcessState()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _plain_warnings():
            code = _main(cli, [str(a) for a in args])
    finally:
        saved.restore()
    return code, out.getvalue(), err.getvalue()


def _main(cli, argv: list[str]) -> int:
    """cli.main as `python -m` runs it: SystemExit gives the exit code, and an exception that
    escapes (an internal error under --debug) prints its traceback and exits with 1."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


@contextlib.contextmanager
def _plain_warnings():
    """Warnings as a plain `python` shows them: on stderr, with the interpreter's default
    filters (pytest would otherwise record them, and an unexpected one would go unseen)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning,
                         DeprecationWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _show_warning
        yield


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class _ProcessState:
    """What a command may change for the whole process: the working directory, environment,
    signal handlers, recursion limit and numpy's print and error settings."""

    def __init__(self):
        import numpy as np

        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.signals = {s: signal.getsignal(s) for s in _SIGNALS}
        self.recursion = sys.getrecursionlimit()
        self.printoptions, self.errors = np.get_printoptions(), np.geterr()

    def restore(self) -> None:
        import numpy as np

        os.chdir(self.cwd)
        if dict(os.environ) != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        for sig, handler in self.signals.items():
            if signal.getsignal(sig) is not handler and handler is not None:
                signal.signal(sig, handler)
        sys.setrecursionlimit(self.recursion)
        np.set_printoptions(**self.printoptions)
        np.seterr(**self.errors)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGPIPE, signal.SIGCHLD)


def program_in(folder: Path, text: str | None = None) -> Path:
    """`folder/prog.dp`: the text given, or a copy of programs/digits_mlp.dp (whose checkpoint
    and metrics then go into the folder too, away from the repository's)."""
    path = folder / "prog.dp"
    if text is None:
        shutil.copy(ROOT / "programs" / "digits_mlp.dp", path)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def write_program(tmp_path):
    def write(text: str, name: str = "prog.dp") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def span_problem(err: DpError, sources: dict[str, str], strict_end: bool = False) \
        -> str | None:
    """Why `err.span` is not inside the text it names, or None if it is: lines split at
    newlines, as the parser counts them; the start's column from 1 to the line's length + 1.
    The (exclusive) end may cover the line's newline, or stop one past the last line."""
    s = err.span
    if s is None:
        return None
    if s.file not in sources:
        return f"unknown file: {s.file!r} is neither the mutated file nor a stdlib file"
    lines = sources[s.file].split("\n")
    if not 1 <= s.line <= len(lines):
        return f"start line: {s.line} outside 1..{len(lines)}"
    if not 1 <= s.col <= len(lines[s.line - 1]) + 1:
        return f"start column: {s.col} outside 1..{len(lines[s.line - 1]) + 1} on line {s.line}"
    if (s.end_line, s.end_col) < (s.line, s.col):
        return f"end before start: {s.end_line}:{s.end_col} < {s.line}:{s.col}"
    if strict_end:
        if not s.end_line <= len(lines):
            return f"end line: {s.end_line} outside 1..{len(lines)}"
        if not s.end_col <= len(lines[s.end_line - 1]) + 1:
            return f"end column: {s.end_col} outside 1..{len(lines[s.end_line - 1]) + 1}"
    elif s.end_line > len(lines) + 1 or (s.end_line == len(lines) + 1 and s.end_col != 1) or \
            (s.end_line <= len(lines) and s.end_col > len(lines[s.end_line - 1]) + 2):
        return f"end: {s.end_line}:{s.end_col} past the end of the text"
    return None


@pytest.fixture(scope="session")
def mlp_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of programs/digits_mlp.dp after 20 steps, in a folder of its own: the
    repository ships none, so tests that load one make it."""
    path = tmp_path_factory.mktemp("mlp") / "digits_mlp.safetensors"
    code, _, err = dp_here("train", "programs/digits_mlp.dp", "--steps", "20", "--checkpoint",
                           path, cwd=ROOT)
    assert code == 0, err
    return path
