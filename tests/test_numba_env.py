"""The Numba cache works without a usable HOME and never writes beside the
installed package; two cold-cache processes at once both succeed; four threads calling one
model get bitwise the serial result; `dp run` works from a read-only installation with HOME
unusable and NUMBA_CACHE_DIR unset, and never prints "cannot cache function"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT, dp_here, program_in

SCRIPT = ("from dp.interpreter.commands.cli import main; import sys; "
          "sys.exit(main(['train', 'programs/digits_mlp.dp', '--steps', '5', "
          "'--checkpoint', sys.argv[1]]))")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "HOME")}
    env.update(extra)
    return env


def _no_home(tmp_path) -> str:
    """A HOME that cannot hold a cache (a file, not a folder; /nonexistent is creatable by root)."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    return str(home)


def _nbi_files():
    return {p for d in ("interpreter",) for p in (ROOT / d).rglob("*.nbi")}


def test_runs_with_home_unusable_and_cache_dir_unset(tmp_path):
    ckpt = str(tmp_path / "digits.safetensors")
    before = _nbi_files()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ckpt], cwd=ROOT, text=True,
                          capture_output=True, env=_env(HOME=_no_home(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "cannot cache" not in proc.stderr and "accuracy" in proc.stdout
    assert _nbi_files() == before  # nothing written beside the package


def test_two_cold_cache_processes_at_once(tmp_path):
    env = _env(HOME=_no_home(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cold"))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / f"{i}.ckpt")],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "cannot cache" not in err and "accuracy" in out
    assert any((tmp_path / "cold" / "dp" / "numba").rglob("*.nbi"))


THREADS = """
import threading
import numpy as np
import dp
net = dp.load("programs/digits_mlp.dp").model("Digits", seed=0)
x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
outs = [[] for _ in range(4)]
start = threading.Barrier(4)
def calls(i):
    start.wait()  # the model's first call comes from four threads at once
    outs[i] += [net(x) for _ in range(100)]
threads = [threading.Thread(target=calls, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
serial = net(x)
assert all(len(o) == 100 and all(np.array_equal(a, serial) for a in o) for o in outs)
print("same")
"""


def test_four_threads_calling_one_model_match_the_serial_result():
    """A fresh process whose first calls come from four threads (the kernels are loaded when
    the executor is imported, not lazily on first use, which is not thread-safe before Python
    3.12.3): every result is bitwise the serial one."""
    r = subprocess.run([sys.executable, "-c", THREADS], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert (r.returncode, r.stdout.strip()) == (0, "same"), r.stderr[-2000:]


# --- a read-only installation -----------------------------------------------------------------
# Where each package of dp is in the source tree (pyproject.toml's package-dir): the copy is laid
# out as an installation is.
LAYOUT = {"api": "dp", "dsl": "dp/dsl", "stdlib": "dp/stdlib", "interpreter": "dp/interpreter"}


def _installed_copy(folder) -> list[str]:
    """dp's packages copied into `folder` as installed, made read-only; returns their files."""
    for src, dst in LAYOUT.items():
        shutil.copytree(ROOT / src, folder / dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return files


def test_dp_run_from_a_read_only_installation_with_no_home(tmp_path):
    """The package read-only, HOME=/nonexistent (for root, who could create it, a path under a
    file), NUMBA_CACHE_DIR unset: `dp run` works, never says "cannot cache function", and
    writes nothing beside the package. Root ignores the read-only bits, so the last check is
    what shows that nothing tried to write there."""
    package = tmp_path / "site"
    package.mkdir()
    files = _installed_copy(package)
    program = program_in(tmp_path)
    assert dp_here("train", program, "--steps", "5")[0] == 0  # a checkpoint to run
    home = "/nonexistent" if os.getuid() != 0 else _no_home(tmp_path) + "/nonexistent"
    env = _env(HOME=home, PYTHONPATH=str(package), PYTHONDONTWRITEBYTECODE="1",
               TMPDIR=str(tmp_path))
    code = ("import sys, dp; assert dp.__file__.startswith(sys.argv[1]), dp.__file__\n"
            "from dp.interpreter.commands.cli import main; sys.exit(main(['run', sys.argv[2]]))")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(package), str(program)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("accuracy(Digits, digits(split = test)) = ")
        assert "cannot cache" not in proc.stderr
        assert sorted(str(p.relative_to(package)) for p in package.rglob("*")) == files
    finally:
        for p in [package, *package.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)  # so that pytest can remove it
