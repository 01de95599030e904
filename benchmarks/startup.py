"""Start-up time: what a user waits for before dp does any work of theirs.

Each case runs as a subprocess, as a user runs it, several times (median and min):

  import dp                        the Python API's import
  dp check programs/digits_mlp.dp  parse (the user's file), check, describe
  dp run PROG                      load a checkpoint, predict: the run block of a small program
  dp train PROG --steps 3          the whole command
  dp train: first step             the figure its closing line reports, "(first step X s)":
                                   the plan for the batch size built, the Numba kernels loaded

cold: every run gets a new, empty cache directory (XDG_CACHE_HOME; NUMBA_CACHE_DIR unset, so
that the kernels' cache goes there too): the grammar is compiled, the standard library parsed
and every kernel compiled. warm: one cache directory, filled by a run before the timed ones.
Nothing touches the user's own caches. Each command's CPU time (user + system) is shown
beside its wall-clock time: on a busy machine it is the steadier figure.

    python benchmarks/startup.py [--runs 5] [--cold-runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "programs" / "digits_mlp.dp"
FIRST_STEP = re.compile(r"\(first step (\d+\.\d+) s\)")


def dp_command() -> list[str]:
    """The `dp` script beside this Python (what a user types), else `python -m`."""
    script = Path(sys.executable).with_name("dp")
    return [str(script)] if script.is_file() else [sys.executable, "-m",
                                                   "dp.interpreter.commands.cli"]


def environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(cache)
    return env


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall-clock and CPU (user + system) seconds of one run, and what it printed; a failure
    stops the benchmark. On a busy machine the CPU time is the steadier of the two."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, proc.stdout


def cases(work: Path) -> dict[str, list[str]]:
    dp = dp_command()
    prog = str(work / "digits_mlp.dp")
    return {
        "import dp": [sys.executable, "-c", "import dp"],
        "dp check digits_mlp.dp": dp + ["check", str(PROGRAM)],
        "dp run digits_mlp.dp": dp + ["run", prog],
        "dp train digits_mlp.dp --steps 3": dp + ["train", prog, "--steps", "3",
                                                  "--checkpoint", str(work / "t.safetensors")],
    }


def measure(runs: int, cold_runs: int) -> list[dict]:
    """One row per case and cache state: name, cache, runs, median and min seconds."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dp-startup-") as tmp:
        work = Path(tmp)
        shutil.copy(PROGRAM, work / "digits_mlp.dp")
        warm = environment(work / "warm-cache")
        # the checkpoint `dp run` reads (and the warm cache filled on the way)
        timed(dp_command() + ["train", str(work / "digits_mlp.dp"), "--steps", "1"], warm, ROOT)
        for name, argv in cases(work).items():
            for state, n in (("cold", cold_runs), ("warm", runs)):
                walls, cpus, firsts = [], [], []
                if state == "warm":
                    timed(argv, warm, ROOT)  # fills what this case needs
                for i in range(n):
                    env = environment(work / f"cold-{len(rows)}-{i}") \
                        if state == "cold" else warm
                    seconds, cpu, out = timed(argv, env, ROOT)
                    walls.append(seconds)
                    cpus.append(cpu)
                    first = FIRST_STEP.search(out)
                    if first:
                        firsts.append(float(first[1]))
                    if state == "cold":
                        shutil.rmtree(env["XDG_CACHE_HOME"], ignore_errors=True)
                rows.append(_row(name, state, walls, cpus))
                if firsts:
                    rows.append(_row("dp train: first step (reported)", state, firsts))
    return rows


def _row(name: str, state: str, values: list[float], cpus: list[float] | None = None) -> dict:
    """The figures of one case; `cpu_s`, the median CPU time, only for a whole command."""
    return {"case": name, "cache": state, "runs": len(values),
            "median_s": statistics.median(values), "min_s": min(values),
            "cpu_s": statistics.median(cpus) if cpus else None}


def table(rows: list[dict]) -> str:
    lines = ["| case | cache | runs | median s | min s | median CPU s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['cache']} | {r['runs']} | {r['median_s']:.3f} | "
              f"{r['min_s']:.3f} | " + ("" if r["cpu_s"] is None else f"{r['cpu_s']:.3f}") + " |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed warm runs of each case")
    p.add_argument("--cold-runs", type=int, default=3, help="timed cold runs of each case")
    args = p.parse_args(argv)
    if args.runs < 1 or args.cold_runs < 1:
        p.error("--runs and --cold-runs take at least 1")
    print(table(measure(args.runs, args.cold_runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
