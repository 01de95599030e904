"""Crash safety of checkpoints: a process killed (SIGKILL, nothing cleaned up) at any moment of a
run that saves every step, or at each step of writing one, leaves a checkpoint that loads and
verifies; the temp files it leaves are never read, and the next save removes them.

The numbers: 20 kills at random moments (seed 0) of `dp train --checkpoint-every 1`, each
followed by `dp run` on the checkpoint; a kill between the temp file's fsync and the rename,
and one between the rename and the directory's fsync. A kill is not a power cut: what was
written before it is in the page cache and survives, so these tests show that the order of the
steps leaves a complete file under the checkpoint's name at every moment, not that the fsyncs
reach the disk.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dp_here, program_in
from dp.interpreter.training import checkpoint

KILLS = 20


def _spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dp.interpreter.commands.cli",
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.tmp"))


@pytest.mark.slow  # 20 processes started and killed: 40-70 s
def test_killed_at_20_random_moments_leaves_a_verified_checkpoint(tmp_path):
    """Each run resumes the last (so kills land in resumed runs too) and is killed a random
    0-1.5 s after it starts training (the first, after its first epoch); `dp run` then loads
    the checkpoint, verifying its sha256, whatever temp files the kill left beside it."""
    program = program_in(tmp_path)
    ckpt = tmp_path / "prog.safetensors"
    rng = np.random.RandomState(0)
    delays, steps, strays_seen = rng.uniform(0, 1.5, size=KILLS), [], 0
    for delay in delays:
        resume = ("--resume",) if ckpt.exists() else ()
        proc = _spawn("train", program, "--set", "epochs=1000", "--checkpoint-every", "1",
                      *resume)
        assert proc.stdout.readline().startswith("training Digits")  # past the start-up
        if not resume:  # the first run: from its first epoch on, there is a checkpoint
            assert re.match(r"epoch +1/", proc.stdout.readline())
        time.sleep(delay)
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
        strays_seen += bool(_strays(tmp_path))
        tensors, meta, used = checkpoint.load_checkpoint_or_previous(ckpt)  # sha256 verified
        steps.append(int(meta["step"]))
        code, out, err = dp_here("run", program, "--checkpoint", used)
        assert code == 0, err
        assert out.startswith("accuracy(Digits, digits(split = test)) = ")
    assert steps == sorted(steps) and steps[-1] > steps[0] > 0  # the runs went on
    # Whatever the kills left, the next save removes: SIGINT saves the step and exits 130.
    (tmp_path / "prog.safetensors.tmp").write_bytes(b"half a checkpoint")
    proc = _spawn("train", program, "--set", "epochs=1000", "--resume")
    for line in proc.stdout:  # training Digits, resuming from, then epoch lines
        if line.startswith("epoch "):  # in the loop: SIGINT saves the step
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _strays(tmp_path) == []
    assert int(checkpoint.load_checkpoint(ckpt)[1]["step"]) >= steps[-1]
    print(f"{KILLS} kills at steps {steps}; {strays_seen} left a temp file")


# --- a kill at each step of writing a checkpoint -----------------------------------------------
WRITER = """
import os, signal, sys
import numpy as np
from dp.interpreter.training import checkpoint as ck

path, where = sys.argv[1], sys.argv[2]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

real_replace = os.replace
def replace(src, dst):  # the rename of the new file over the checkpoint
    if where == "before rename" and dst == path:
        die()
    real_replace(src, dst)
os.replace = replace
if where == "before directory fsync":
    ck._fsync_dir = die
ck.save_checkpoint(path, {"w": np.full(3, 2.0, np.float32)}, {"step": "2"})
print("not killed")
"""


def _save(path: Path, value: float, step: int) -> None:
    checkpoint.save_checkpoint(path, {"w": np.full(3, value, np.float32)}, {"step": str(step)})


@pytest.mark.parametrize("where, loaded_step", [("before rename", "1"),
                                                ("before directory fsync", "2")])
def test_kill_while_writing_leaves_a_loadable_checkpoint(tmp_path, where, loaded_step):
    """Killed after the temp file is written and fsynced but before it is renamed over the
    checkpoint: the checkpoint is the old one, the temp file is ignored. Killed after the
    rename, before the directory is fsynced: the new one, the old one kept as `.previous`.
    Either way the next save removes the temp file, succeeds and leaves no other (when
    `.previous` and the checkpoint are one file, renaming a link over the other does nothing:
    the save must not leave `.previous.tmp` behind)."""
    path = tmp_path / "m.safetensors"
    _save(path, 0.0, 0)
    _save(path, 1.0, 1)
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path), where], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "not killed" not in proc.stdout, proc.stderr
    tensors, meta = checkpoint.load_checkpoint(path)
    assert meta["step"] == loaded_step
    assert tensors["w"].tolist() == [float(loaded_step)] * 3
    previous = checkpoint.load_checkpoint(checkpoint.previous_path(path))[1]
    assert previous["step"] == "1"  # kept before the rename: the checkpoint itself, then
    stray = tmp_path / "m.safetensors.tmp"
    assert stray.exists() == (where == "before rename")
    if stray.exists():  # the whole new checkpoint, never read
        assert checkpoint.load_checkpoint(stray)[1]["step"] == "2"
    _save(path, 3.0, 3)
    assert checkpoint.load_checkpoint(path)[1]["step"] == "3"
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.safetensors.previous"]


def test_the_next_save_removes_stray_temp_files_and_nothing_else(tmp_path):
    """Only `<path>.tmp` and `<path>.previous.tmp` of the checkpoint being saved, and a link
    there is removed, never followed (the file it points to is untouched)."""
    path = tmp_path / "m.safetensors"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "m.safetensors.tmp").symlink_to(victim)
    (tmp_path / "m.safetensors.previous.tmp").write_bytes(b"half a copy")
    others = ["other.safetensors.tmp", "m.safetensors.tmp.1", "notes.tmp"]
    for name in others:
        (tmp_path / name).write_text("not dp's")
    _save(path, 1.0, 1)
    _save(path, 2.0, 2)
    assert victim.read_text() == "keep me" and not path.is_symlink()
    assert checkpoint.load_checkpoint(path)[1]["step"] == "2"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["m.safetensors", "m.safetensors.previous", "victim.txt"] + others)
    for name in others:
        assert (tmp_path / name).read_text() == "not dp's"


def test_a_folder_named_like_the_temp_file_is_left_and_reported(tmp_path):
    path = tmp_path / "m.safetensors"
    _save(path, 1.0, 1)
    (tmp_path / "m.safetensors.tmp").mkdir()
    (tmp_path / "m.safetensors.tmp" / "data").write_text("a user's")
    with pytest.raises(checkpoint.DpError, match=r"cannot write checkpoint '.*m\.safetensors': "
                                                 r"File exists") as err:
        _save(path, 2.0, 2)
    assert err.value.kind == "checkpoint"
    assert (tmp_path / "m.safetensors.tmp" / "data").read_text() == "a user's"
    assert checkpoint.load_checkpoint(path)[1]["step"] == "1"
