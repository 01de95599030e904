"""The speed comparison's harness (benchmarks/run_all.py, benchmarks/report.py) on made-up
records, so that its table and results file cannot rot unseen. Nothing is timed and neither
torch nor jax is run here."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("report", "run_all"):
        sys.modules.pop(name, None)
    import report
    import run_all
    yield report, run_all
    for name in ("report", "run_all"):
        sys.modules.pop(name, None)


def step(impl, workload, ms, **extra):
    return {"impl": impl, "workload": workload, "median_step_ms": ms, "first_step_ms": 150.0,
            "peak_rss_mb": 150.4, "rss_increase_mb": 50.2, **extra}


def rows(text):
    """The table's rows by their first cell, each a list of cells."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| workload"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells
    return out


RECORDS = [
    step("dp", "mlp_digits", 0.12, run=1),
    step("dp", "mlp_digits", 0.10, run=2),          # the better of two runs counts
    step("numpy", "mlp_digits", 0.05),
    step("torch", "mlp_digits", 0.20, peak_rss_mb=305.0, rss_increase_mb=85.0),
    step("dp", "transformer_charlm", 20.0),
    step("torch", "transformer_charlm", 30.0),
    step("torch_fused", "transformer_charlm", 25.0),
    {"impl": "jax", "workload": "transformer_charlm", "error": "boom"},
    step("dp", "transformer_charlm", 1.0, budget_s=10.0, heldout_loss_nats=1.9512,
         steps_total=480),                          # a budget run is not a timing
    step("torch", "transformer_charlm", 1.0, budget_s=10.0, heldout_loss_nats=2.0,
         steps_total=350),
]


def test_the_table_gives_dp_over_the_best_peer_and_marks_dp_slower(harness):
    report, _ = harness
    text = report.table(RECORDS, [], budget=10.0)
    mlp = rows(text)["mlp_digits step"]
    # workload, unit, dp, numpy, torch, torch fused, jax, ratio, first step, dp RSS, torch RSS
    assert mlp[:8] == ["mlp_digits step", "ms/step", "0.1", "0.05", "0.2", "—", "—",
                       "**2.00** (NumPy)"]
    assert mlp[8:11] == ["150", "150 (+50)", "305 (+85)"]
    gpt = rows(text)["transformer_charlm step"]
    assert gpt[2:8] == ["20.0", "—", "30.0", "25.0", "failed", "0.80 (torch fused)"]
    assert gpt[11] == "1.951 / 2.000 / — / —"
    assert "jax transformer_charlm: FAILED (boom)" in text
    assert "transformer_charlm: steps in 10 s of training steps: dp 480, torch 350" in text


def test_a_skipped_peer_is_said_and_no_budget_drops_the_column(harness):
    report, _ = harness
    why = "no --torch-python and this Python has no torch"
    text = report.table([step("dp", "cnn_digits", 0.2)], [("torch", why)], budget=0)
    assert "torch: skipped (no --torch-python and this Python has no torch)" in text
    assert "held-out" not in text
    assert rows(text)["cnn_digits step"][2:8] == ["0.2", "—", "—", "—", "—", "—"]


def test_variants_are_listed_and_the_fastest_counts(harness):
    report, _ = harness
    recs = [{"impl": "dp", "workload": "inference_mlp_small", "median_us": us, "variant": v}
            for v, us in (("net_call", 15.0), ("model_predict", 9.0))]
    recs.append({"impl": "numpy", "workload": "inference_mlp_small", "median_us": 4.5,
                 "variant": "gemm"})
    text = report.table(recs, [], budget=10.0)
    assert rows(text)["digits MLP, batch-1 inference"][2:8] == [
        "9.00", "4.50", "—", "—", "—", "**2.00** (NumPy)"]
    assert "inference_mlp_small (µs/call): dp net_call 15.0, dp model_predict 9.00" in text


def test_mlp_wide_is_given_as_a_share_of_the_matmul_peak(harness):
    report, _ = harness
    recs = [step("dp", "mlp_wide", 40.0, gflops=150.0),
            {"impl": "numpy", "workload": "matmul_peak", "gflops": 200.0},
            {"impl": "torch", "workload": "matmul_peak", "gflops": 180.0}]
    text = report.table(recs, [], budget=0)
    assert "NumPy (dp BLAS) 200 GFLOP/s, torch 180 GFLOP/s" in text
    assert "mlp_wide (6 x params x batch FLOPs per step): dp 150 GFLOP/s (75% of the peak)" \
        in text


def test_the_results_file_starts_with_the_machine(harness, tmp_path):
    report, _ = harness
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    meta = report.machine(BENCH.parent, {"torch": None}, now)
    assert meta["workload"] == "meta" and meta["date"] == "2026-01-02T03:04:05"
    assert meta["cores"] >= 1 and meta["numpy"] and meta["cpu"]
    first = report.results_path(tmp_path / "results", now, "box")
    assert first == tmp_path / "results" / "2026-01-02-box.jsonl"
    report.write_jsonl(first, meta, RECORDS[:2])
    assert report.results_path(tmp_path / "results", now, "box").name == "2026-01-02-box-2.jsonl"
    lines = [json.loads(line) for line in first.read_text().splitlines()]
    assert lines[0] == meta and lines[1:] == RECORDS[:2]


def test_the_command_line_refuses_what_it_cannot_run(harness, capsys, tmp_path):
    _, run_all = harness
    with pytest.raises(SystemExit) as e:
        run_all.arguments(["--only", "mlp_digits,nope"])
    assert e.value.code == 2
    assert "unknown workload 'nope' in --only" in capsys.readouterr().err
    ap, _ = run_all.arguments([])
    with pytest.raises(SystemExit) as e:
        run_all.find_peer(ap, "torch", str(tmp_path / "python"), ["torch"])
    assert e.value.code == 2
    assert f"--torch-python {tmp_path / 'python'}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_all.find_peer(ap, "torch", sys.executable, ["no_such_module_here"])
    assert e.value.code == 2
    assert "cannot import no_such_module_here (ModuleNotFoundError: No module named " \
        "'no_such_module_here')" in capsys.readouterr().err
    python, why, versions = run_all.find_peer(ap, "torch", None, ["no_such_module_here"])
    assert (python, versions) == (None, {})
    assert why == "no --torch-python and this Python has no no_such_module_here"
