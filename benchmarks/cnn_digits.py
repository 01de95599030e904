"""Benchmark W2 `cnn_digits`: median ms per training step of dp, hand-written NumPy and PyTorch.

As /work/shared/bench/README.md defines it (conv 3x3 pad 1, 1 -> 16, ReLU, max pool 2x2 ->
16x4x4, flatten, linear 256 -> 10 on the digits; Adam lr 1e-3; batch 32; 15 epochs = 705
steps): a step = take the batch + zero grads + forward + loss + backward + optimizer step +
loss as a float; median of the 685 steps after 20 warm-up steps. dp trains
programs/digits_cnn.dp through its Python API as `dp train` does; the flat [B, 64] batch is
reshaped to dp's input type R^(1, 8, 8), i.e. [B, 1, 8, 8], inside the timed step (a view of
the contiguous batch, no copy). numpy_ref.py's im2col CNN runs in this process on the same
batches; torch_ref.py --only cnn_digits runs in a subprocess with --torch-python (or this
Python, if it has torch). Not used by the tests or CI.

    .venv/bin/python benchmarks/cnn_digits.py --torch-python /work/torchvenv/bin/python
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
WARMUP, BATCH, EPOCHS, STEPS, F32 = 20, 32, 15, 705, np.float32


def time_steps(train_step, predict):  # -> (median s per step, test accuracy)
    ds, order, times = data.load_digits("train"), np.random.RandomState(1), []
    for _ in range(EPOCHS):
        it = data.batches(ds, BATCH, order)   # draws the epoch's permutation (untimed, as refs)
        for _ in range(data.num_batches(len(ds), BATCH)):
            t0 = perf_counter()
            loss = train_step(*next(it))      # the batch (two slices) + the training step
            times.append(perf_counter() - t0)
    assert isinstance(loss, float) and np.isfinite(loss) and len(times) == STEPS
    test = data.load_digits("test")           # flat [297, 64]; predict reshapes as it needs
    return statistics.median(times[WARMUP:]), float(np.mean(predict(test.x).argmax(-1) == test.y))


def run_dp():  # programs/digits_cnn.dp step by step, as `dp train` runs it
    tprog, _ = load_programs([str(ROOT / "programs" / "digits_cnn.dp")])
    config = train_config(tprog.trains[0])
    assert (config.batch, config.epochs, config.seed) == (BATCH, EPOCHS, 0)
    assert config.optimizer.name == "adam"
    model = Model(tprog, tprog.trains[0].model.name)
    assert model.arg_shapes[0] == (1, 8, 8), model.arg_shapes
    model.init(config.seed)
    state = config.optimizer.init_state(model.flat.size, model.dtype)
    steps = itertools.count(1)

    def train_step(xb, yb):
        xb = xb.reshape(len(xb), 1, 8, 8)                  # a view: the batch is contiguous
        loss = model.loss_and_grad(config.loss, xb, yb)   # forward + backward; a float
        config.optimizer.update(model.flat, model.grad_flat, state, next(steps))
        return loss
    return time_steps(train_step, lambda x: model.predict(x.reshape(len(x), 1, 8, 8)))


# ---- copied from /work/shared/bench/numpy_ref.py: uniform_init, softmax_xent, Adam,
# ---- _im2col_index, CNN (unchanged but for comments and the float32 alias F32)
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

class Adam:  # torch.optim.Adam defaults (betas 0.9/0.999, eps 1e-8, bias correction)
    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        step = F32(self.lr / c1)
        sc2 = F32(np.sqrt(c2))
        b1, b2 = F32(self.b1), F32(self.b2)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= step * m / (np.sqrt(v) / sc2 + F32(self.eps))

def _im2col_index():  # gather index (64*9,) into a row of 64 pixels + one zero: 3x3 pad 1
    idx = np.full((8, 8, 3, 3), 64, np.int64)
    for i in range(8):
        for j in range(8):
            for di in range(3):
                for dj in range(3):
                    ii, jj = i + di - 1, j + dj - 1
                    if 0 <= ii < 8 and 0 <= jj < 8:
                        idx[i, j, di, dj] = ii * 8 + jj
    return idx.reshape(-1)

class CNN:  # im2col conv as (B*64, 9) @ (9, 16), NHWC; pool gradient to the first max
    IDX = _im2col_index()

    def __init__(self, rng):
        self.Wc = uniform_init(rng, (16, 9), 9)
        self.bc = uniform_init(rng, (16,), 9)
        self.Wf = uniform_init(rng, (10, 256), 256)
        self.bf = uniform_init(rng, (10,), 256)
        self.params = [self.Wc, self.bc, self.Wf, self.bf]

    def im2col(self, x):                             # x: (B,64) -> (B*64, 9)
        B = x.shape[0]
        xe = np.empty((B, 65), F32)
        xe[:, :64] = x
        xe[:, 64] = 0
        return np.take(xe, self.IDX, axis=1).reshape(B * 64, 9)

    def forward(self, x):
        B = x.shape[0]
        cols = self.im2col(x)
        conv = cols @ self.Wc.T + self.bc           # (B*64,16)
        a = np.maximum(conv, 0).reshape(B, 8, 8, 16)
        pooled = np.maximum(np.maximum(a[:, 0::2, 0::2], a[:, 0::2, 1::2]),
                            np.maximum(a[:, 1::2, 0::2], a[:, 1::2, 1::2]))  # (B,4,4,16)
        flat = pooled.reshape(B, 256)
        z = flat @ self.Wf.T + self.bf
        return z, (cols, conv, a, pooled, flat)

    def predict(self, x):
        return self.forward(x)[0]

    def loss_and_grads(self, x, y):
        B = x.shape[0]
        z, (cols, conv, a, pooled, flat) = self.forward(x)
        loss, dz = softmax_xent(z, y)
        dWf = dz.T @ flat
        dbf = dz.sum(0)
        dpooled = (dz @ self.Wf).reshape(B, 4, 4, 16)
        da = np.empty((B, 8, 8, 16), F32)
        taken = np.zeros((B, 4, 4, 16), bool)
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):   # first max wins, as in torch
            m = a[:, i::2, j::2] == pooled
            m &= ~taken
            taken |= m
            np.multiply(m, dpooled, out=da[:, i::2, j::2])
        da = da.reshape(B * 64, 16)
        da *= conv > 0
        dWc = da.T @ cols
        dbc = da.sum(0)
        return loss, [dWc, dbc, dWf, dbf]


def run_numpy():  # numpy_ref's CNN + Adam, same digits split, batches and timing
    model = CNN(np.random.default_rng(0))
    opt = Adam(model.params, lr=1e-3)

    def train_step(xb, yb):
        loss, grads = model.loss_and_grads(xb, yb)
        opt.step(grads)
        return loss
    return time_steps(train_step, model.predict)


def run_torch(python, ref):  # -> (median s per step, test accuracy)
    out = subprocess.check_output([python, ref, "--only", "cnn_digits"], text=True)
    rec = next(r for r in map(json.loads, out.splitlines()) if r["workload"] == "cnn_digits")
    assert rec["steps_total"] == STEPS, rec
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
    print(f"W2 cnn_digits, best of {args.repeat} run(s); dp/impl <= 1: dp is at least as fast")
    print(f"{'impl':<6} {'ms/step':>8} {'examples/s':>11} {'test acc':>9} {'dp/impl':>8}")
    for name, (med, acc) in res.items():
        ratio = res["dp"][0] / med
        print(f"{name:<6} {1e3 * med:8.4f} {BATCH / med:11,.0f} {acc:9.4f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
