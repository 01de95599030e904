"""Data-parallel training on one machine: the step time of `mlp_wide` at N = 1 and N = 2.

mlp_wide is 512 -> 2048 ReLU -> 2048 ReLU -> 10 (5.27M parameters, 21 MB of float32), SGD with
momentum, global batch 256, on random inputs labelled by a random linear teacher. A step is
what `dp train` does per step: the rank's slice of the batch, forward, loss, backward, the
allreduce of the gradient buffer and the loss, the gradient's norm and the optimizer update.
N = 1 runs in one process without MPI (BLAS on every core); N = 2 under the mpich wheel's
mpiexec (each rank's BLAS on cores / 2, as dp sets it). For each N it prints the median step,
the median allreduce inside it (its share of the step) and a bare allreduce of the parameter
bytes with nothing else running; then the ratios. Not used by the tests or CI.

    .venv/bin/python benchmarks/distributed_mlp_wide.py [--steps 40] [--warmup 5] [--repeat 3]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

PROGRAM = """\
Wide: R^512 -> R^10
Wide(x) = FeedForward(FeedForward(FeedForward(x) : R^2048) : R^2048; act = identity)

train Wide on npz("wide.npz"):
  loss cross_entropy; optimizer sgd(lr = 0.01, momentum = 0.9); batch 256; steps 1000
"""


def make_workload(folder: Path, examples: int = 256 * 16) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((examples, 512)).astype(np.float32)
    y = (x @ rng.standard_normal((512, 10))).argmax(1).astype(np.int64)
    np.savez(folder / "wide.npz", x=x, y=y)
    (folder / "wide.dp").write_text(PROGRAM)
    return folder / "wide.dp"


def rank_run(program: str, steps: int, warmup: int) -> None:
    """One rank (or the one process): time `steps` steps; rank 0 prints the figures as JSON."""
    from dp.interpreter.training import distributed

    distributed.start_workers(None, [])  # threads = cores / ranks, before NumPy loads
    import numpy as np
    from dp.dsl.loader import load_programs
    from dp.interpreter.core.model import Model
    from dp.interpreter.core.optim import from_record, grad_norm
    from dp.interpreter.data.sources import dataset, fit_data
    from dp.interpreter.data.streams import ExampleStream

    world = distributed.join()
    tprog, _ = load_programs([program])
    config = tprog.train
    model = Model(tprog, config.model, config.model_span)
    ds = fit_data(dataset(config.data, str(Path(program).parent), model.arg_shapes[0]), model,
                  config.loss, config.data.span)
    stream, optimizer = ExampleStream(ds, config.batch, config.seed), from_record(config.optimizer)
    model.init(config.seed)
    state = optimizer.init_state(model.flat.size, model.dtype)
    stop, run = SimpleNamespace(requested=False), SimpleNamespace()
    world.share(model.flat, state, stream, run)
    rate = dict(config.optimizer.hyper)["lr"]
    step_times, reduce_times, batches = [], [], iter(stream)
    for step in range(1, steps + 1):
        xb, yb = next(batches)
        began, reduced = time.perf_counter(), world.seconds
        loss = world.loss_and_grad(model, config.loss, xb, yb, (config.seed, step), stop)
        grad_norm(model.grad_flat)
        optimizer.update(model.flat, model.grad_flat, state, step, rate)
        step_times.append(time.perf_counter() - began)
        reduce_times.append(world.seconds - reduced)
    bare = []
    if world.size > 1:  # the parameter bytes alone, every rank waiting at the start
        from mpi4py import MPI

        buf = np.ones_like(model.grad_flat)
        for _ in range(10):
            world.comm.Barrier()
            began = time.perf_counter()
            world.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            bare.append(time.perf_counter() - began)
    if world.root:
        print(json.dumps({
            "ranks": world.size, "params": int(model.flat.size), "loss": loss,
            "step": statistics.median(step_times[warmup:]),
            "allreduce": statistics.median(reduce_times[warmup:]),
            "bare": statistics.median(bare) if bare else 0.0,
            "threads": os.environ.get("OPENBLAS_NUM_THREADS", "all")}), flush=True)


def measure(program: Path, ranks: int, steps: int, warmup: int, threads: int = 0) -> dict:
    """Figures of one run; `threads` > 0 sets BLAS's (else dp's default)."""
    env = dict(os.environ, **({name: str(threads) for name in
                               ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMBA_NUM_THREADS")} if threads else {}))
    me = [sys.executable, str(Path(__file__).resolve()), "--rank-run", str(program),
          str(steps), str(warmup)]
    cmd = me if ranks == 1 else [str(Path(sys.executable).parent / "mpiexec"), "-n",
                                 str(ranks), *me]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-run":
        rank_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3, help="runs of each N (the best is kept)")
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpu_name()}, {cores} cores; mlp_wide, batch 256, {a.steps} steps "
          f"(median after {a.warmup}), best of {a.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        program = make_workload(Path(tmp))
        best = {}
        for n, threads in ((1, 0), (1, 1), (2, 0)):
            runs = [measure(program, n, a.steps, a.warmup, threads) for _ in range(a.repeat)]
            for r in runs:
                print(f"  N={n}, BLAS threads {r['threads']}: step {r['step'] * 1e3:7.1f} ms, "
                      f"allreduce in it {r['allreduce'] * 1e3:6.1f} ms, bare allreduce "
                      f"{r['bare'] * 1e3:6.1f} ms")
            best[n, threads] = min(runs, key=lambda r: r["step"])
    one, two = best[1, 0], best[2, 0]
    mb = one["params"] * 4 / 1e6
    print("\n| N | ms/step | examples/s | allreduce ms | share of step | BLAS threads |")
    print("|---|--------:|-----------:|-------------:|--------------:|-------------:|")
    for r in best.values():
        print(f"| {r['ranks']} | {r['step'] * 1e3:.1f} | {256 / r['step']:,.0f} | "
              f"{r['allreduce'] * 1e3:.1f} | {r['allreduce'] / r['step']:.0%} | "
              f"{r['threads']} |")
    print(f"\nspeed-up N=2 / N=1: {one['step'] / two['step']:.2f}x "
          f"(step time ratio {two['step'] / one['step']:.2f}); against N=1 with one BLAS "
          f"thread: {best[1, 1]['step'] / two['step']:.2f}x")
    compute = two["step"] - two["allreduce"]
    print(f"compute per step at N=2 (step - allreduce): {compute * 1e3:.1f} ms = "
          f"{compute / one['step']:.2f} of N=1's step")
    print(f"bare allreduce of {one['params']:,} float32 ({mb:.1f} MB): {two['bare'] * 1e3:.1f} ms "
          f"= {mb / 1e3 / max(two['bare'], 1e-9):.2f} GB/s of parameter bytes")


if __name__ == "__main__":
    main()
