"""On a terminal `dp train` shows a live bar (steps, loss, examples/s, time left) above its
epoch lines; in a pipe it prints only the lines (tests/test_resume.py reads those)."""

from __future__ import annotations

import os
import re
import sys

import pexpect

from conftest import ROOT


def test_progress_bar_on_a_terminal(tmp_path):
    env = dict(os.environ, COLUMNS="160", LINES="40", TERM="xterm")
    child = pexpect.spawn(sys.executable, ["-m", "dp.interpreter.commands.cli", "train",
                                           "programs/digits_mlp.dp", "--set", "epochs=300",
                                           "--checkpoint", str(tmp_path / "m.safetensors")],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120,
                          dimensions=(40, 160))
    # tqdm: " 12%|█▏   | 1700/14100 [00:01<00:09, 1300.00step/s, epoch 37/300 loss 0.0100 ...]"
    child.expect(r"\| *(\d+)/14100 \[\d\d:\d\d<(\d\d:\d\d), +[\d.]+step/s, "
                 r"epoch +\d+/300 loss \d\.\d{4} [\d,]+ ex/s\]")
    assert 0 < int(child.match.group(1)) < 14100  # mid-run, with the time left
    child.expect(r"epoch +\d+/300  loss \d\.\d{4}  held-out loss")  # lines go on
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert re.search(r"trained 14100 steps", child.before)
