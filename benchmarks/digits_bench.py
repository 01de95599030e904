"""What the digits benchmarks share (W1 mlp_digits, W2 cnn_digits): the timed loop over the
reference batches, dp's step as `dp train` runs it, the torch_ref.py subprocess, the report.

A timed step is /work/shared/bench/README.md's: take the batch + zero grads + forward + loss +
backward + optimizer step + loss as a float; the median leaves out 20 warm-up steps.
"""
import argparse, importlib.util, itertools, json, statistics, subprocess, sys  # noqa: E401
from pathlib import Path
from time import perf_counter

import numpy as np

from dp.dsl.loader import load_programs
from dp.interpreter.data import dataset as data
from dp.interpreter.core.model import Model
from dp.interpreter.core.optim import from_record

ROOT = Path(__file__).resolve().parent.parent
WARMUP, BATCH, F32 = 20, 32, np.float32


def time_steps(train_step, predict, epochs):  # -> (median s per step, test accuracy)
    ds, order, times = data.load_digits("train"), np.random.RandomState(1), []
    for _ in range(epochs):
        it = data.batches(ds, BATCH, order)   # draws the epoch's permutation (untimed, as refs)
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


# ---- copied from /work/shared/bench/numpy_ref.py (both networks use them)
def uniform_init(rng, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(F32)

def softmax_xent(z, y):
    B = z.shape[0]
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    s = e.sum(1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(B), y]))
    dz = e / s
    dz[np.arange(B), y] -= 1.0
    dz /= B
    return loss, dz


def run_numpy(model, opt, epochs):  # a numpy_ref network and optimizer on the same batches
    def train_step(xb, yb):
        loss, grads = model.loss_and_grads(xb, yb)
        opt.step(grads)
        return loss
    return time_steps(train_step, model.predict, epochs)


def run_torch(python, ref, workload):  # -> (median s per step, test accuracy)
    out = subprocess.check_output([python, ref, "--only", workload], text=True)
    rec = next(r for r in map(json.loads, out.splitlines()) if r["workload"] == workload)
    return rec["median_step_ms"] / 1e3, rec["test_acc"]


def main(doc, title, workload, runners):
    """Run dp and NumPy interleaved, torch when it can, and print the ratios."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    ap.add_argument("--torch-ref", default=str(ROOT.parent / "shared" / "bench" / "torch_ref.py"))
    args, res = ap.parse_args(), {}
    for _ in range(args.repeat):      # interleaved, so drifts in machine load hit both alike
        for name, fn in runners:
            res[name] = min(res.get(name, (np.inf, 0.0)), fn())
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    if py is None:
        print("torch: SKIPPED (no torch in this Python; pass --torch-python PATH)")
    elif not Path(args.torch_ref).is_file():
        print(f"torch: SKIPPED ({args.torch_ref} not found; pass --torch-ref PATH)")
    else:
        res["torch"] = min(run_torch(py, args.torch_ref, workload) for _ in range(args.repeat))
    print(f"{title}, best of {args.repeat} run(s); dp/impl <= 1: dp is at least as fast")
    print(f"{'impl':<6} {'ms/step':>8} {'examples/s':>11} {'test acc':>9} {'dp/impl':>8}")
    for name, (med, acc) in res.items():
        ratio = res["dp"][0] / med
        print(f"{name:<6} {1e3 * med:8.4f} {BATCH / med:11,.0f} {acc:9.4f} {ratio:8.2f}")
