"""What the two digits benchmarks share (mlp_digits, cnn_digits): the timed loop over the
batches, dp's step as `dp train` runs it, torch_peer.py in a subprocess, the report.

A timed step is benchmarks/README.md's: take the batch + zero grads + forward + loss +
backward + optimizer step + loss as a float; the median leaves out 20 warm-up steps.
"""
import argparse
import importlib.util
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter

import numpy as np
from dp.dsl.loader import load_programs
from dp.interpreter.core.model import Model
from dp.interpreter.core.optim import from_record
from dp.interpreter.data import dataset as data

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))
import numpy_peer  # noqa: E402, F401  (for mlp_digits.py and cnn_digits.py)

WARMUP, BATCH, F32 = 20, 32, np.float32


def time_steps(train_step, predict, epochs):  # -> (median s per step, test accuracy)
    ds, order, times = data.load_digits("train"), np.random.RandomState(1), []
    for _ in range(epochs):
        it = data.batches(ds, BATCH, order)   # draws the epoch's permutation (untimed)
        for _ in range(data.num_batches(len(ds), BATCH)):
            t0 = perf_counter()
            loss = train_step(*next(it))      # the batch (two slices) + the training step
            times.append(perf_counter() - t0)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert len(times) == epochs * data.num_batches(len(ds), BATCH)
    test = data.load_digits("test")           # flat [297, 64]; predict reshapes as it needs
    return statistics.median(times[WARMUP:]), float(np.mean(predict(test.x).argmax(-1) == test.y))


def run_dp(program, epochs):  # the program step by step, as `dp train` runs it
    tprog, _ = load_programs([str(ROOT / "programs" / program)])
    config = tprog.train
    assert (config.batch, config.epochs, config.seed) == (BATCH, epochs, 0)
    model, optimizer = Model(tprog, config.model), from_record(config.optimizer)
    shape = model.arg_shapes[0]                # the flat [B, 64] rows as the input type: a view
    model.init(config.seed)
    state = optimizer.init_state(model.flat.size, model.dtype)
    steps = itertools.count(1)

    def train_step(xb, yb):
        loss = model.loss_and_grad(config.loss, xb.reshape((len(xb),) + shape), yb)
        optimizer.update(model.flat, model.grad_flat, state, next(steps))
        return loss
    return time_steps(train_step, lambda x: model.predict(x.reshape((len(x),) + shape)), epochs)


def run_numpy(model, opt, epochs):  # a numpy_peer network and optimizer on the same batches
    def train_step(xb, yb):
        loss, grads = model.loss_and_grads(xb, yb)
        opt.step(grads)
        return loss
    return time_steps(train_step, model.predict, epochs)


def run_torch(python, workload):  # -> (median s per step, test accuracy)
    out = subprocess.check_output([python, str(PEERS / "torch_peer.py"), workload], text=True)
    rec = next(r for r in map(json.loads, out.splitlines()) if r["workload"] == workload)
    return rec["median_step_ms"] / 1e3, rec["test_acc"]


def main(doc, title, workload, runners):
    """Run dp and NumPy interleaved, torch when it can, and print the ratios."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    args, res = ap.parse_args(), {}
    for _ in range(args.repeat):      # interleaved, so drifts in machine load hit both alike
        for name, fn in runners:
            res[name] = min(res.get(name, (np.inf, 0.0)), fn())
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    if py is None:
        print("torch: SKIPPED (no torch in this Python; pass --torch-python PATH)")
    else:
        res["torch"] = min(run_torch(py, workload) for _ in range(args.repeat))
    print(f"{title}, best of {args.repeat} run(s); dp/impl <= 1: dp is at least as fast")
    print(f"{'impl':<6} {'ms/step':>8} {'examples/s':>11} {'test acc':>9} {'dp/impl':>8}")
    for name, (med, acc) in res.items():
        ratio = res["dp"][0] / med
        print(f"{name:<6} {1e3 * med:8.4f} {BATCH / med:11,.0f} {acc:9.4f} {ratio:8.2f}")
