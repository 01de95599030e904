"""Benchmark W1 `mlp_digits`: median ms per training step of dp, hand-written NumPy and PyTorch.

As /work/shared/bench/README.md defines it (64 -> 128 ReLU -> 10 on the digits, SGD lr 0.1
momentum 0.9, batch 32, 20 epochs): a step = take the batch + zero grads + forward + loss +
backward + optimizer step + loss as a float; median after 20 warm-up steps. dp trains
programs/digits_mlp.dp through its Python API as `dp train` does; numpy_ref.py's MLP runs in
this process; torch_ref.py --only mlp_digits runs in a subprocess with --torch-python (or this
Python, if it has torch). Not used by the tests or CI.

    .venv/bin/python benchmarks/mlp_digits.py --torch-python /work/torchvenv/bin/python
"""
import argparse, importlib.util, itertools, json, statistics, subprocess, sys  # noqa: E401
from pathlib import Path
from time import perf_counter

import numpy as np

from dp.dsl.loader import load_programs
from dp.interpreter import data
from dp.interpreter.model import Model
from dp.interpreter.train import train_config

ROOT = Path(__file__).resolve().parent.parent
WARMUP, BATCH, EPOCHS, F32 = 20, 32, 20, np.float32


def time_steps(train_step, predict):  # -> (median s per step, test accuracy)
    ds, order, times = data.load_digits("train"), np.random.RandomState(1), []
    for _ in range(EPOCHS):
        it = data.batches(ds, BATCH, order)   # draws the epoch's permutation (untimed, as refs)
        for _ in range(data.num_batches(len(ds), BATCH)):
            t0 = perf_counter()
            loss = train_step(*next(it))      # the batch (two slices) + the training step
            times.append(perf_counter() - t0)
    assert isinstance(loss, float) and np.isfinite(loss) and len(times) == 940
    test = data.load_digits("test")
    return statistics.median(times[WARMUP:]), float(np.mean(predict(test.x).argmax(-1) == test.y))


def run_dp():  # programs/digits_mlp.dp step by step, as `dp train` runs it
    tprog, _ = load_programs([str(ROOT / "programs" / "digits_mlp.dp")])
    config = train_config(tprog.trains[0])
    assert (config.batch, config.epochs, config.seed) == (BATCH, EPOCHS, 0)
    model = Model(tprog, tprog.trains[0].model.name)
    model.init(config.seed)
    state = config.optimizer.init_state(model.flat.size, model.dtype)
    steps = itertools.count(1)

    def train_step(xb, yb):
        loss = model.loss_and_grad(config.loss, xb, yb)   # forward + backward; a float
        config.optimizer.update(model.flat, model.grad_flat, state, next(steps))
        return loss
    return time_steps(train_step, model.predict)


# ---- copied from /work/shared/bench/numpy_ref.py: uniform_init, softmax_xent, SGDMomentum, MLP
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

class SGDMomentum:
    def __init__(self, params, lr, momentum):
        self.params, self.lr, self.m = params, F32(lr), F32(momentum)
        self.bufs = [np.zeros_like(p) for p in params]

    def step(self, grads):
        for p, g, b in zip(self.params, grads, self.bufs):
            b *= self.m
            b += g
            p -= self.lr * b

class MLP:
    def __init__(self, rng, n_in=64, n_h=128, n_out=10):
        self.W1 = uniform_init(rng, (n_h, n_in), n_in)
        self.b1 = uniform_init(rng, (n_h,), n_in)
        self.W2 = uniform_init(rng, (n_out, n_h), n_h)
        self.b2 = uniform_init(rng, (n_out,), n_h)
        self.params = [self.W1, self.b1, self.W2, self.b2]

    def predict(self, x):
        return np.maximum(x @ self.W1.T + self.b1, 0) @ self.W2.T + self.b2

    def loss_and_grads(self, x, y):
        hp = x @ self.W1.T + self.b1
        h = np.maximum(hp, 0)
        z = h @ self.W2.T + self.b2
        loss, dz = softmax_xent(z, y)
        dW2 = dz.T @ h
        db2 = dz.sum(0)
        dh = dz @ self.W2
        dh *= hp > 0
        dW1 = dh.T @ x
        db1 = dh.sum(0)
        return loss, [dW1, db1, dW2, db2]


def run_numpy():  # numpy_ref's MLP + SGDMomentum, same digits split, batches and timing
    model = MLP(np.random.default_rng(0))
    opt = SGDMomentum(model.params, lr=0.1, momentum=0.9)

    def train_step(xb, yb):
        loss, grads = model.loss_and_grads(xb, yb)
        opt.step(grads)
        return loss
    return time_steps(train_step, model.predict)


def run_torch(python, ref):  # -> (median s per step, test accuracy)
    out = subprocess.check_output([python, ref, "--only", "mlp_digits"], text=True)
    rec = next(r for r in map(json.loads, out.splitlines()) if r["workload"] == "mlp_digits")
    return rec["median_step_ms"] / 1e3, rec["test_acc"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    ap.add_argument("--torch-ref", default=str(ROOT.parent / "shared" / "bench" / "torch_ref.py"))
    args, res = ap.parse_args(), {}
    for _ in range(args.repeat):      # interleaved, so drifts in machine load hit both alike
        for name, fn in (("dp", run_dp), ("numpy", run_numpy)):
            res[name] = min(res.get(name, (np.inf, 0.0)), fn())
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    if py is None:
        print("torch: SKIPPED (no torch in this Python; pass --torch-python PATH)")
    elif not Path(args.torch_ref).is_file():
        print(f"torch: SKIPPED ({args.torch_ref} not found; pass --torch-ref PATH)")
    else:
        res["torch"] = min(run_torch(py, args.torch_ref) for _ in range(args.repeat))
    print(f"W1 mlp_digits, best of {args.repeat} run(s); dp/impl <= 1: dp is at least as fast")
    print(f"{'impl':<6} {'ms/step':>8} {'examples/s':>11} {'test acc':>9} {'dp/impl':>8}")
    for name, (med, acc) in res.items():
        ratio = res["dp"][0] / med
        print(f"{name:<6} {1e3 * med:8.4f} {BATCH / med:11,.0f} {acc:9.4f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
