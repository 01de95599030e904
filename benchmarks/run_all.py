"""The whole speed comparison in one command: every workload of benchmarks/README.md for dp
(with hand-written NumPy in the same process), PyTorch eager and fused, and JAX, each run in a
process of its own; one markdown table on stdout, the raw records as JSON lines in
benchmarks/results/<date>-<host>.jsonl (the first line: the machine, versions, date, commit).

    .venv/bin/python benchmarks/run_all.py --torch-python /tmp/torchvenv/bin/python \\
        --jax-python /tmp/jaxvenv/bin/python [--only mlp_digits,mlp_wide] [--repeat 3]

A peer without a Python to run it is skipped, and the table says so. Not used by the tests
or CI (tests/test_benchmarks.py checks only the table's code, on made-up records).
"""
import argparse
import datetime
import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
# workload -> torch's variants (hand-written, and PyTorch's fused kernel); JAX runs each once,
# and dp's worker runs NumPy after dp where NumPy has the workload
PLAN = {
    "mlp_digits": [""],
    "cnn_digits": [""],
    "rnn_charlm": ["hand", "fused"],
    "lstm_charlm": ["hand", "fused"],
    "transformer_charlm": ["hand", "fused"],
    "mlp_wide": [""],
    "inference_mlp_small": [""],
    "alexnet_forward": [""],
}


def arguments(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    ap.add_argument("--jax-python", help="a Python with jax and optax (default: this one, if "
                                         "it has)")
    ap.add_argument("--only", default="", help="comma-separated workloads (default: all): "
                                               + ", ".join(PLAN))
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of every timing, interleaved; the best median counts")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds of training steps for the char LMs' held-out loss "
                         "(0: leave it out)")
    ap.add_argument("--out", help="the JSON lines file (default: benchmarks/results/"
                                  "<date>-<host>.jsonl; -: none)")
    args = ap.parse_args(argv)
    args.only = [w for w in args.only.split(",") if w] or list(PLAN)
    unknown = [w for w in args.only if w not in PLAN]
    if unknown:
        ap.error(f"unknown workload {unknown[0]!r} in --only: expected some of "
                 f"{', '.join(PLAN)}")
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.budget < 0:
        ap.error(f"--budget must be 0 or more seconds, got {args.budget:g}")
    return ap, args


def find_peer(ap, name, given, modules):
    """(python or None, why it is skipped, its versions). A Python given on the command line
    must import the peer (otherwise it is a usage error); without one, this Python is used
    when it has the peer."""
    flag = f"--{name}-python"
    if given is None:
        if importlib.util.find_spec(modules[0]) is None:
            return None, f"no {flag} and this Python has no {modules[0]}", {}
        given = sys.executable
    elif not Path(given).is_file():
        ap.error(f"{flag} {given}: no such file")
    probe = "import json, " + ", ".join(modules) + "; print(json.dumps({" + ", ".join(
        f"'{m}': {m}.__version__" for m in modules) + "}))"
    try:
        proc = subprocess.run([given, "-c", probe], capture_output=True, text=True,
                              timeout=120)
    except OSError as e:
        ap.error(f"{flag} {given}: cannot run it ({e.strerror or e})")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        ap.error(f"{flag} {given}: cannot import {', '.join(modules)} ({last})")
    return given, None, json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(python, script, *args):
    """One worker process: its JSON records, or one record saying why it failed."""
    command = [python, str(PEERS / script), *map(str, args)]
    began = time.perf_counter()
    print(f"  {' '.join([Path(python).parent.parent.name + ':' + script, *map(str, args)])}",
          end="", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        out, code, err = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        out, code, err = "", None, "timed out after 1800 s"
    print(f"  {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    if code == 0:
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
    print(f"    FAILED: {last}", file=sys.stderr)
    impl = {"dp_peer.py": "dp", "jax_peer.py": "jax"}.get(script, "torch")
    if script == "torch_peer.py" and "fused" in args:
        impl = "torch_fused"
    return [{"workload": args[0], "impl": impl, "error": last[:300]}]


def jobs(workload, dp, torch, jax):
    """The worker runs of one timing round of a workload, as (python, script, args)."""
    out = [(dp, "dp_peer.py", (workload,))]
    if torch:
        out += [(torch, "torch_peer.py", (workload, v) if v else (workload,))
                for v in PLAN[workload]]
    if jax:
        out.append((jax, "jax_peer.py", (workload,)))
    return out


def main(argv=None):
    ap, args = arguments(argv)
    now = datetime.datetime.now()
    torch, torch_skip, torch_v = find_peer(ap, "torch", args.torch_python, ["torch"])
    jax, jax_skip, jax_v = find_peer(ap, "jax", args.jax_python, ["jax", "optax"])
    skipped = [(n, why) for n, why in (("torch", torch_skip), ("jax", jax_skip)) if why]
    for name, why in skipped:
        print(f"{name}: skipped ({why})", file=sys.stderr)
    dp = sys.executable
    records = []

    def run(python, script, *a, run_no=1):
        for rec in run_worker(python, script, *a):
            records.append({"run": run_no, **rec})

    print("matmul peak", file=sys.stderr)
    run(dp, "dp_peer.py", "matmul_peak")
    if torch:
        run(torch, "torch_peer.py", "matmul_peak")
    for workload in args.only:
        print(workload, file=sys.stderr)
        for n in range(1, args.repeat + 1):   # interleaved: drifts in load hit every side
            for python, script, a in jobs(workload, dp, torch, jax):
                run(python, script, *a, run_no=n)
        if args.budget and workload in report.BUDGET_ROWS:
            for python, script, a in jobs(workload, dp, torch, jax):
                run(python, script, *a, "--budget", args.budget)
    meta = report.machine(HERE.parent, {"torch": torch_v.get("torch"), "jax": jax_v.get("jax"),
                                        "optax": jax_v.get("optax"), "repeat": args.repeat,
                                        "budget_s": args.budget, "skipped": dict(skipped)},
                          now)
    path = Path(args.out) if args.out else report.results_path(HERE / "results", now,
                                                               socket.gethostname())
    if args.out != "-":
        report.write_jsonl(path, meta, records)
    print(f"# dp speed comparison, {meta['date']}, {meta['cpu']} ({meta['cores']} cores), "
          f"best of {args.repeat} run(s)\n")
    print(report.table(records, skipped, args.budget))
    print("\nraw records: " + (f"{path}" if args.out != "-" else "not written (--out -)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
