"""Benchmark AlexNet inference: median forward time per image of dp and PyTorch, float32.

A batch of standard-normal 3x224x224 images (batch 8 by default, `--batch`) through AlexNet
in torchvision's single-tower layout (conv 3->64 k11 s4 p2, ReLU, maxpool 3/2, conv 64->192 k5
p2, ReLU, maxpool 3/2, convs 192->384, 384->256, 256->256 k3 p1 each with ReLU, maxpool 3/2,
flatten, linear 9216->4096, ReLU, 4096->4096, ReLU, 4096->1000; no dropout; 61,100,840
parameters). Timed call = one forward pass of the whole batch, outputs in hand: dp's
`Model.predict(x)` on the stdlib's AlexNet (`load_programs([])`, no program file), torch's
`model(x)` in eval mode under `torch.inference_mode()` with `torch.set_num_threads(2)`,
run in a subprocess (this script with `--torch-worker`, under --torch-python or this Python
if it has torch). Each: `--warmup` untimed calls (dp's first call builds the plan and loads
numba's kernels), then the median of `--calls` timed calls; ms per image = median / batch.
Not used by the tests or CI.

    .venv/bin/python benchmarks/alexnet_forward.py --torch-python /tmp/torchvenv/bin/python
"""
import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter

import numpy as np

PARAMS = 61_100_840


def median_call(fn, x, warmup, calls):  # -> (median s per call, output of the last call)
    for _ in range(warmup):
        out = fn(x)
    times = []
    for _ in range(calls):
        t0 = perf_counter()
        out = fn(x)
        times.append(perf_counter() - t0)
    return statistics.median(times), out


def images(batch):  # the same inputs on both sides
    return np.random.default_rng(0).standard_normal((batch, 3, 224, 224), np.float32)


def run_dp(batch, warmup, calls):  # -> (median s per call, parameter count)
    from dp.dsl.loader import load_programs  # imported here: the torch worker has no dp
    from dp.interpreter.core.model import Model
    tprog, _ = load_programs([])                  # the stdlib alone, AlexNet included
    model = Model(tprog, "AlexNet")
    model.init(0)
    med, out = median_call(model.predict, images(batch), warmup, calls)
    assert out.shape == (batch, 1000) and out.dtype == np.float32, (out.shape, out.dtype)
    assert np.all(np.isfinite(out))
    return med, model.num_params


def torch_worker(batch, warmup, calls):  # runs under --torch-python; prints one JSON line
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
    sys.path.insert(0, str(Path(__file__).with_name("peers")))
    from torch_peer import alexnet  # the run_all peer's model, built once there
    model = alexnet().eval()
    x = torch.from_numpy(images(batch))
    with torch.inference_mode():
        med, out = median_call(model, x, warmup, calls)
    assert tuple(out.shape) == (batch, 1000) and out.dtype == torch.float32
    print(json.dumps({"median_s": med, "params": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


def run_torch(python, batch, warmup, calls):  # -> (median s per call, parameter count)
    out = subprocess.check_output([python, __file__, "--torch-worker", "--batch", str(batch),
                                   "--warmup", str(warmup), "--calls", str(calls)], text=True)
    rec = json.loads(out.splitlines()[-1])
    return rec["median_s"], rec["params"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="images per forward call (default 8)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    ap.add_argument("--calls", type=int, default=10, help="timed calls; the median is kept")
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(args.batch, args.warmup, args.calls)
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    impls = [("dp", lambda: run_dp(args.batch, args.warmup, args.calls))]
    if py is None:
        print("torch: SKIPPED (no torch in this Python; pass --torch-python PATH)")
    else:
        impls.append(("torch", lambda: run_torch(py, args.batch, args.warmup, args.calls)))
    res = {}
    for _ in range(args.repeat):      # interleaved, so drifts in machine load hit both alike
        for name, fn in impls:
            res[name] = min(res.get(name, (np.inf, 0)), fn())
    print(f"AlexNet forward, float32, batch {args.batch}, median of {args.calls} calls after "
          f"{args.warmup} warm-up, best of {args.repeat} run(s); dp/impl <= 1: dp is as fast")
    print(f"{'impl':<6} {'params':>11} {'ms/batch':>9} {'ms/image':>9} {'images/s':>9} "
          f"{'dp/impl':>8}")
    for name, (med, n) in res.items():
        print(f"{name:<6} {n:11,} {1e3 * med:9.1f} {1e3 * med / args.batch:9.2f} "
              f"{args.batch / med:9.1f} {res['dp'][0] / med:8.2f}")
    wrong = [name for name, (_, n) in res.items() if n != PARAMS]
    if wrong:
        sys.exit(f"error: {', '.join(wrong)} AlexNet does not have {PARAMS:,} parameters")


if __name__ == "__main__":
    main()
