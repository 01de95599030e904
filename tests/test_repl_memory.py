"""`dp repl --max-memory SIZE`: the REPL refuses an expression whose model's buffers need more,
as `dp run` does (interpreter/core/memory.py), and goes on with the next line."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, dp_here

# parameters of 1000 x 10000 float32 (38 MiB): over 10M, far under the default 8 GiB
LINES = "x: R^1000\nsum(FeedForward(x; m = 10000)) * 0\nsum(x) * 0\n"


def _pipe(*flags: str):
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "repl", *flags],
                          input=LINES, capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_repl_refuses_a_model_over_max_memory_and_goes_on():
    code, out, err = _pipe("--max-memory", "10M")
    assert err.startswith("error[resource]: the expression needs ≥ 38.2 MiB of buffers, more "
                          "than the limit of 10 MiB: the parameter feedforward.W (in "
                          "FeedForward) alone is 38.1 MiB (10,000,000 numbers)\n"
                          "  --> <repl>:2:5\n")  # the call of FeedForward
    assert err.count("error[") == 1 and "Traceback" not in err
    assert out.endswith("R  shape ()\n0.\n")  # the next line runs: the expression of x alone
    assert out.count("R  shape ()") == 1
    assert code == 1


def test_without_the_flag_the_default_limit_holds():
    code, out, err = _pipe()
    assert (code, err) == (0, "")
    assert out.count("R  shape ()\n0.\n") == 2


def test_a_size_that_is_not_one_is_a_usage_error():
    code, out, err = dp_here("repl", "--max-memory", "10X")
    assert code == 2 and out == ""
    assert err == ("error[usage]: argument --max-memory: '10X' is not a size: write bytes, or "
                   "a number with K, M, G or T (such as 3G) (see `dp --help`)\n")


def test_the_help_names_the_flag():
    code, out, _ = dp_here("repl", "--help")
    assert code == 0
    assert "usage: dp repl [-h] [--max-memory SIZE] [files ...]" in out
