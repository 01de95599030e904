"""Benchmark rnn_charlm alone: median ms per training step of dp and PyTorch, and the
held-out loss each reaches, for quick A/B timing (benchmarks/run_all.py runs every workload
and peer).

As benchmarks/README.md defines it (characters of CPython's pydoc_data.topics, the last tenth
held out; embed 64, SimpleRNN hidden 128, linear 128 -> vocab; Adam lr 3e-3; seq 64, batch
32, 300 steps; windows from one RandomState(0) stream): a step = take the batch + zero grads +
forward + loss + backward + optimizer step + loss as a float; median after 10 warm-up steps.
dp trains programs/charlm_rnn.dp through its Python API as `dp train` does. torch_peer.py
rnn_charlm runs a hand-written cell loop (torch) and nn.RNN (torch_fused) in subprocesses
with --torch-python. Not used by the tests or CI.

With --cell LSTM, the same program with `cell = LSTM` against nn.LSTM.

    .venv/bin/python benchmarks/rnn_charlm.py --torch-python /tmp/torchvenv/bin/python
    .venv/bin/python benchmarks/rnn_charlm.py --cell LSTM --torch-python ...
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

from dp.dsl.loader import load_text as load_text_program
from dp.interpreter.core.model import Model
from dp.interpreter.core.optim import from_record
from dp.interpreter.data import text
from dp.interpreter.data.sources import dataset

ROOT = Path(__file__).resolve().parent.parent
TORCH_PEER = ROOT / "benchmarks" / "peers" / "torch_peer.py"
WARMUP, STEPS = 10, 300


def run_dp(cell):  # -> (median s per step, held-out nats/char, final train loss)
    source = (ROOT / "programs" / "charlm_rnn.dp").read_text()
    return train_dp(source.replace("cell: RNN = SimpleRNN", f"cell: RNN = {cell}"))


def train_dp(source):  # a char LM program's text -> (median s/step, held-out, final loss)
    tprog = load_text_program(source)
    config = tprog.train
    assert (config.batch, config.steps, config.seed) == (32, STEPS, 0)
    model, optimizer = Model(tprog, config.model), from_record(config.optimizer)
    windows = dataset(config.data, str(ROOT / "programs"), model.arg_shapes[0])
    model.init(config.seed)
    state = optimizer.init_state(model.flat.size, model.dtype)
    batches, steps, times, losses = windows.batches(32, config.seed), itertools.count(1), [], []
    for _ in range(STEPS):
        t0 = perf_counter()
        xb, yb = next(batches)
        loss = model.loss_and_grad(config.loss, xb, yb)
        optimizer.update(model.flat, model.grad_flat, state, next(steps))
        times.append(perf_counter() - t0)
        losses.append(loss)
    xv, yv = text.heldout_windows(windows.corpus.val_ids, windows.seq)
    heldout = model.loss(config.loss, xv, yv)
    return statistics.median(times[WARMUP:]), heldout, statistics.mean(losses[-20:])


def run_torch(python, cell):  # -> {impl: (median s per step, held-out, final train loss)}
    if cell == "SimpleRNN":
        return torch_records(python, "rnn_charlm", ["hand", "fused"])
    return torch_records(python, "lstm_charlm", ["fused"])


def torch_records(python, workload, variants):  # torch_peer.py's records of the variants
    res = {}
    for variant in variants:
        out = subprocess.check_output([python, str(TORCH_PEER), workload, variant], text=True)
        for r in map(json.loads, out.splitlines()):
            res[r["impl"]] = (r["median_step_ms"] / 1e3, r["heldout_loss_nats"],
                              r["final_train_loss"])
    return res


def arguments(doc, *extra):  # the options both char-LM benchmarks take
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    for args, kwargs in extra:
        ap.add_argument(*args, **kwargs)
    return ap.parse_args()


def compare(args, title, run_dp_once, run_torch_once):
    """Best medians of dp and of each torch impl over --repeat runs, printed as ratios."""
    res = {"dp": min(run_dp_once() for _ in range(args.repeat))}
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    if py is None:
        print("torch: SKIPPED (no torch in this Python; pass --torch-python PATH)")
    else:
        for _ in range(args.repeat):
            for k, v in run_torch_once(py).items():
                res[k] = min(res.get(k, v), v)
    print(f"{title}, best of {args.repeat} run(s); dp/impl <= 1: dp is at least as fast")
    print(f"{'impl':<12} {'ms/step':>8} {'tokens/s':>10} {'held-out':>9} {'train':>7} "
          f"{'dp/impl':>8}")
    for name, (med, heldout, final) in res.items():
        print(f"{name:<12} {1e3 * med:8.3f} {32 * 64 / med:10,.0f} {heldout:9.4f} {final:7.4f} "
              f"{res['dp'][0] / med:8.2f}")


def main():
    args = arguments(__doc__, (("--cell",), {"choices": ["SimpleRNN", "LSTM"],
                                             "default": "SimpleRNN"}))
    compare(args, f"rnn_charlm ({args.cell})", lambda: run_dp(args.cell),
            lambda py: run_torch(py, args.cell))


if __name__ == "__main__":
    main()
