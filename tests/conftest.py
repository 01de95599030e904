"""Shared test helpers: run the `dp` CLI in-process or as a subprocess, write programs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_dp(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 600):
    """`dp ARGS` as a user runs it: a subprocess, returning (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def write_program(tmp_path):
    def write(text: str, name: str = "prog.dp") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write
