"""The speed comparison's output: the best figure of each side per workload, the one markdown
table run_all.py prints (dp / best peer, memory, start-up, the held-out loss a 10-s budget
buys), the machine it ran on, and the JSON lines file of the raw records.

No dp, torch or jax here: tests/test_benchmarks.py checks the table on made-up records.
"""
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

# workload -> (label, unit, the record's figure: lower is better)
ROWS = {
    "mlp_digits": ("mlp_digits step", "ms/step", "median_step_ms"),
    "cnn_digits": ("cnn_digits step", "ms/step", "median_step_ms"),
    "rnn_charlm": ("rnn_charlm step", "ms/step", "median_step_ms"),
    "lstm_charlm": ("rnn_charlm, cell = LSTM, step", "ms/step", "median_step_ms"),
    "transformer_charlm": ("transformer_charlm step", "ms/step", "median_step_ms"),
    "mlp_wide": ("mlp_wide step", "ms/step", "median_step_ms"),
    "inference_mlp_small": ("digits MLP, batch-1 inference", "µs/call", "median_us"),
    "alexnet_forward": ("AlexNet forward, batch 8", "ms/image", "ms_per_image"),
}
IMPLS = ("dp", "numpy", "torch", "torch_fused", "jax")
HEADS = {"dp": "dp", "numpy": "NumPy", "torch": "torch", "torch_fused": "torch fused",
         "jax": "JAX"}
PEERS = IMPLS[1:]
BUDGET_ROWS = ("rnn_charlm", "transformer_charlm")
BUDGET_IMPLS = ("dp", "torch", "torch_fused", "jax")
NONE = "—"


def number(v):
    """Three significant figures or so, never in e-notation."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def best(records):
    """The best timing record of each (workload, impl) over repeats and variants (budget runs
    and failures left out): the one with the lowest figure."""
    out = {}
    for rec in records:
        row = ROWS.get(rec.get("workload"))
        if row is None or "error" in rec or rec.get("budget_s"):
            continue
        key, metric = (rec["workload"], rec["impl"]), row[2]
        if key not in out or rec[metric] < out[key][row[2]]:
            out[key] = rec
    return out


def ratio(workload, bests):
    """(dp / the best peer's figure, that peer), or None without dp or any peer."""
    metric = ROWS[workload][2]
    peers = [(bests[workload, p][metric], p) for p in PEERS if (workload, p) in bests]
    if (workload, "dp") not in bests or not peers:
        return None
    value, peer = min(peers)
    return bests[workload, "dp"][metric] / value, peer


def _memory(rec):
    if rec is None or "peak_rss_mb" not in rec:
        return NONE
    return f"{rec['peak_rss_mb']:.0f} (+{rec['rss_increase_mb']:.0f})"


def _budgets(records):
    """(workload, impl) -> the budget run's record."""
    return {(r["workload"], r["impl"]): r for r in records
            if r.get("budget_s") and "error" not in r}


def _failed(records):
    return {(r["workload"], r["impl"]) for r in records if "error" in r}


def table(records, skipped=(), budget=10.0):
    """The markdown table of the run, then notes: skipped peers, variants, GFLOP/s."""
    bests, budgets, failed = best(records), _budgets(records), _failed(records)
    workloads = [w for w in ROWS if any(k[0] == w for k in bests | dict.fromkeys(failed))]
    heads = (["workload", "unit"] + [HEADS[i] for i in IMPLS]
             + ["dp / best peer", "dp first step ms", "dp RSS MB", "torch RSS MB"])
    if budget:
        heads.append(f"held-out nats after {budget:g} s (dp / torch / fused / JAX)")
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(heads))) + "|"]
    for w in workloads:
        label, unit, metric = ROWS[w]
        cells = [label, unit]
        for impl in IMPLS:
            rec = bests.get((w, impl))
            cells.append(number(rec[metric]) if rec else
                         "failed" if (w, impl) in failed else NONE)
        r = ratio(w, bests)
        cells.append(NONE if r is None else
                     (f"**{r[0]:.2f}**" if r[0] > 1 else f"{r[0]:.2f}") + f" ({HEADS[r[1]]})")
        dp = bests.get((w, "dp"))
        first = dp and (dp.get("first_step_ms") or dp.get("first_call_ms"))
        cells.append(number(first) if first else NONE)
        cells += [_memory(dp), _memory(bests.get((w, "torch")))]
        if budget:
            got = [budgets.get((w, i)) for i in BUDGET_IMPLS]
            cells.append(" / ".join(f"{g['heldout_loss_nats']:.3f}" if g else NONE for g in got)
                         if w in BUDGET_ROWS else NONE)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes(records, bests, budgets, skipped, budget))


def notes(records, bests, budgets, skipped, budget):
    out = [f"{name}: skipped ({why})" for name, why in skipped]
    for rec in records:
        if "error" in rec:
            out.append(f"{rec['impl']} {rec['workload']}: FAILED ({rec['error']})")
    out.append("Figures: the best median of each side over the runs (lower is better); "
               "dp / best peer > 1 (bold) means dp is slower. RSS: peak resident MB of the "
               "workload's process (+ its increase over the process after its imports).")
    variants = {}
    for rec in records:
        if rec.get("variant") and ROWS.get(rec["workload"]) and "error" not in rec:
            metric = ROWS[rec["workload"]][2]
            key = (rec["workload"], rec["impl"], rec["variant"])
            variants[key] = min(variants.get(key, float("inf")), rec[metric])
    for w in ROWS:
        parts = [f"{i} {v} {number(x)}" for (w2, i, v), x in variants.items() if w2 == w]
        if parts:
            out.append(f"{w} ({ROWS[w][1]}): " + ", ".join(parts))
    peak = {}
    for r in records:
        if r.get("workload") == "matmul_peak" and "error" not in r:
            peak[r["impl"]] = max(peak.get(r["impl"], 0.0), r["gflops"])
    if peak:
        top = max(peak.values())
        out.append("float32 matmul peak (2048 x 2048 @ 2048 x 2048, median of 5): " + ", ".join(
            f"{'NumPy (dp BLAS)' if i == 'numpy' else i} {g:.0f} GFLOP/s"
            for i, g in sorted(peak.items())))
        wide = [f"{i} {bests['mlp_wide', i]['gflops']:.0f} GFLOP/s "
                f"({bests['mlp_wide', i]['gflops'] / top:.0%} of the peak)"
                for i in IMPLS if ("mlp_wide", i) in bests]
        if wide:
            out.append("mlp_wide (6 x params x batch FLOPs per step): " + ", ".join(wide))
    if budget:
        for w in BUDGET_ROWS:
            got = [f"{i} {budgets[w, i]['steps_total']}" for i in BUDGET_IMPLS
                   if (w, i) in budgets]
            if got:
                out.append(f"{w}: steps in {budget:g} s of training steps: " + ", ".join(got))
    starts = [r for r in bests.values() if r["impl"] == "dp" and "import_s" in r]
    if starts:
        out.append("dp start-up per worker process (median): import "
                   f"{statistics.median(r['import_s'] for r in starts):.2f} s, load (parse, "
                   f"check, Model, initial weights) "
                   f"{statistics.median(r['load_s'] for r in starts):.2f} s, then the first "
                   "step (plan and Numba kernels from the cache) in the table")
    return out


# ---- the machine and the results file --------------------------------------------------------
def _cpuinfo(key, path="/proc/cpuinfo"):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _blas():
    try:
        import numpy

        deps = numpy.show_config(mode="dicts").get("Build Dependencies", {})
        blas = deps.get("blas", {})
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # an older NumPy without mode="dicts"
        return None


def _git_commit(root):
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], text=True,
                               capture_output=True, check=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine(root, peers, now=None):
    """The first JSON line: the machine, the versions of everything measured, date, commit."""
    mem = _cpuinfo("MemTotal", "/proc/meminfo")
    now = now or datetime.datetime.now()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"workload": "meta", "date": now.isoformat(timespec="seconds"),
            "host": socket.gethostname(), "cpu": _cpuinfo("model name") or platform.processor(),
            "cores": cores, "ram_gb": round(int(mem.split()[0]) / 2**20, 1) if mem else None,
            "python": platform.python_version(), "numpy": _version("numpy"),
            "numba": _version("numba"), "blas": _blas(), "git_commit": _git_commit(root),
            **peers}


def results_path(folder, now, host):
    """benchmarks/results/<date>-<host>.jsonl, with -2, -3... for a later run that day."""
    stem = f"{now:%Y-%m-%d}-{host}"
    path, n = Path(folder) / f"{stem}.jsonl", 1
    while path.exists():
        n += 1
        path = Path(folder) / f"{stem}-{n}.jsonl"
    return path


def write_jsonl(path, meta, records):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for rec in [meta, *records]:
            f.write(json.dumps(rec) + "\n")
