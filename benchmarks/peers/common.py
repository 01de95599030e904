"""What every side of the speed comparison shares: the data, the timing rules, the FLOP
counts, peak memory, and the one-JSON-line-per-record output. NumPy and the standard library
only, so that the PyTorch and JAX venvs (which have no dp) can run it.

The definitions are benchmarks/README.md's ("Exact definitions"): a timed training step is
take the batch + zero grads + forward + loss + backward + optimizer step + the loss read back
as a Python float; the median leaves out the first warm-up steps.
"""
import json
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]           # the dp checkout
DIGITS_NPZ = ROOT / "interpreter" / "data" / "datasets" / "digits.npz"
THREADS = 2                                         # torch.set_num_threads; OpenBLAS's default
BATCH, SEQ, LM_STEPS, LM_WARMUP = 32, 64, 300, 10
DIGITS_WARMUP, DIGITS_EPOCHS = 20, {"mlp_digits": 20, "cnn_digits": 15}
WIDE_BATCH, WIDE_STEPS, WIDE_WARMUP, WIDE_POOL = 256, 50, 5, 16
INFER_CALLS, INFER_WARMUP = 10000, 1000
ALEXNET_BATCH, ALEXNET_WARMUP, ALEXNET_CALLS, ALEXNET_PARAMS = 8, 3, 10, 61_100_840

_BASELINE_MB = None


# ---- output -------------------------------------------------------------------------------
def emit(rec):
    """One record as a JSON line on stdout (run_all.py reads every line of a worker)."""
    print(json.dumps(rec), flush=True)


def mark_baseline():
    """The resident memory after the imports, before any data or model: what RSS grows from."""
    global _BASELINE_MB
    _BASELINE_MB = rss_now_mb()


def rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory():
    """Peak resident memory of this process so far (getrusage's ru_maxrss) and its increase
    over the baseline taken after the imports, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    base = _BASELINE_MB if _BASELINE_MB is not None else 0.0
    return {"peak_rss_mb": round(peak, 1), "rss_increase_mb": round(peak - base, 1)}


def training_record(impl, workload, times, batch, flops, **extra):
    """The figures of one training run from its per-step wall times (all steps, warm-up
    included); the median leaves out `warmup` steps."""
    warmup = extra.pop("warmup")
    med = statistics.median(times[warmup:])
    rec = dict(impl=impl, workload=workload, steps_total=len(times),
               steps_timed=len(times) - warmup, median_step_ms=1e3 * med,
               first_step_ms=1e3 * times[0], examples_per_s=batch / med,
               gflops=flops / med / 1e9, **extra)
    return {**rec, **memory()}


# ---- digits (mlp_digits, cnn_digits, inference_mlp_small) -----------------------------------
def load_digits_split(label_dtype=np.int64):
    """scikit-learn's digits (the copy dp bundles: the same arrays), X = data / 16 float32,
    rows in np.random.RandomState(0).permutation(1797) order; first 1500 train, 297 test."""
    with np.load(DIGITS_NPZ, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    X = (images.reshape(len(images), 64).astype(np.float64) / 16.0).astype(np.float32)
    y = labels.astype(label_dtype)
    perm = np.random.RandomState(0).permutation(len(X))
    X, y = X[perm], y[perm]
    return X[:1500], y[:1500], X[1500:], y[1500:]


def train_digits(step, epochs, index=lambda perm: perm, label_dtype=np.int64, wrap=None):
    """Run `step(xb, yb) -> float loss` over the epochs: one RandomState(1) stream,
    rng.permutation(1500) per epoch (drawn and applied outside the timed step), batch 32, the
    last partial batch (28) kept; the slicing of the batch is inside the timed step.
    `index` turns a permutation into the framework's index, `wrap` the arrays into its own.
    (per-step seconds, mean loss of the last epoch, test X, test y)"""
    Xtr, ytr, Xte, yte = load_digits_split(label_dtype)
    if wrap is not None:
        Xtr, ytr = wrap(Xtr), wrap(ytr)
    rng, n, times, last = np.random.RandomState(1), len(Xtr), [], []
    for _ in range(epochs):
        perm = index(rng.permutation(n))
        Xp, yp = Xtr[perm], ytr[perm]
        last = []
        for i in range(0, n, BATCH):
            t0 = time.perf_counter()
            loss = step(Xp[i:i + BATCH], yp[i:i + BATCH])
            times.append(time.perf_counter() - t0)
            last.append(loss)
    assert isinstance(last[-1], float) and np.isfinite(last[-1]), last[-1]
    return times, float(np.mean(last)), Xte, yte


def digits_record(impl, workload, times, loss, acc, params):
    return training_record(impl, workload, times, BATCH, flops(workload),
                           warmup=DIGITS_WARMUP, final_train_loss=loss, test_acc=acc,
                           params=params)


# ---- text (rnn_charlm, lstm_charlm, transformer_charlm) -------------------------------------
def load_text(dtype=np.int64):
    """CPython's pydoc topics joined in key order; vocabulary = sorted set of characters; the
    last len // 10 characters held out. (train ids, held-out ids, vocabulary size)"""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    text = "\n".join(topics[k] for k in sorted(topics))
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=dtype)
    n_val = len(data) // 10
    return data[:-n_val], data[-n_val:], len(chars)


def lm_windows(train, batch=BATCH, seq=SEQ, seed=0):
    """Training windows forever: one RandomState(seed) stream, 32 random starts per step,
    inputs [s, s + 64), targets one later."""
    rng = np.random.RandomState(seed)
    while True:
        starts = rng.randint(0, len(train) - seq - 1, size=batch)
        chunk = train[starts[:, None] + np.arange(seq + 1)]
        yield chunk[:, :-1].copy(), chunk[:, 1:].copy()


def lm_heldout(val, seq=SEQ, n_windows=20):
    """The held-out sample: 20 windows at np.linspace(0, len(val) - 65, 20) starts."""
    starts = np.linspace(0, len(val) - seq - 1, n_windows).astype(np.int64)
    chunk = val[starts[:, None] + np.arange(seq + 1)]
    return chunk[:, :-1].copy(), chunk[:, 1:].copy()


def train_lm(step, batches, steps=LM_STEPS, budget=None):
    """Run `step(x, y) -> float loss` on prepared batches (taken outside the timed step, as
    the references do). With `budget` (seconds), run until the timed steps add up to it.
    (per-step seconds, losses)"""
    times, losses, total = [], [], 0.0
    while (total < budget) if budget else (len(times) < steps):
        xb, yb = next(batches)
        t0 = time.perf_counter()
        loss = step(xb, yb)
        dt = time.perf_counter() - t0
        times.append(dt)
        losses.append(loss)
        total += dt
    assert isinstance(losses[-1], float) and np.isfinite(losses[-1]), losses[-1]
    return times, losses


def lm_record(impl, workload, times, losses, heldout, vocab, flops, params, budget=None):
    """A char LM's record: timing figures, or with a budget what the budget bought."""
    extra = dict(final_train_loss=float(np.mean(losses[-20:])), heldout_loss_nats=heldout,
                 vocab=vocab, params=params)
    if budget:
        return dict(impl=impl, workload=workload, budget_s=budget, steps_total=len(times),
                    train_s=sum(times), first_step_ms=1e3 * times[0], **extra, **memory())
    rec = training_record(impl, workload, times, BATCH, flops, warmup=LM_WARMUP, **extra)
    rec["tokens_per_s"] = BATCH * SEQ / (rec["median_step_ms"] / 1e3)
    return rec


# ---- mlp_wide ------------------------------------------------------------------------------
def wide_data():
    """The pool: X ~ N(0, 1) [4096, 512] and Y = X @ N(0, 1)^(512 x 10) / sqrt(512), both
    from np.random.default_rng(0), float32; batch k is rows (k % 16) * 256 ... + 256."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((WIDE_POOL * WIDE_BATCH, 512)).astype(np.float32)
    Y = X @ (rng.standard_normal((512, 10)).astype(np.float32) / np.float32(np.sqrt(512)))
    return X, Y, rng


def wide_batches(X, Y):
    for k in range(WIDE_STEPS):
        i = (k % WIDE_POOL) * WIDE_BATCH
        yield X[i:i + WIDE_BATCH], Y[i:i + WIDE_BATCH]


def wide_record(impl, times, losses, params):
    flops = 6 * params * WIDE_BATCH
    return training_record(impl, "mlp_wide", times, WIDE_BATCH, flops, warmup=WIDE_WARMUP,
                           final_train_loss=losses[-1], first_train_loss=losses[0],
                           params=params, flops_per_step=flops)


# ---- inference (inference_mlp_small, alexnet_forward) ----------------------------------------
def latency(fn, n=INFER_CALLS, warmup=INFER_WARMUP):
    """(median, 90th percentile) in µs of n individually timed calls after the warm-up."""
    for _ in range(warmup):
        fn()
    ts = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        ts[i] = clock() - t0
    return float(np.median(ts)) / 1e3, float(np.percentile(ts, 90)) / 1e3


def inference_record(impl, fn, **extra):
    base, _ = latency(lambda: None)
    med, p90 = latency(fn)
    return dict(impl=impl, workload="inference_mlp_small", calls=INFER_CALLS, median_us=med,
                p90_us=p90, call_overhead_us=base, calls_per_s=1e6 / med,
                flops_per_call=2 * (64 * 128 + 128 * 10), **extra)


def infer_input():
    """The one example of inference_mlp_small: U[0, 1) from default_rng(1), shape (1, 64)."""
    return np.random.default_rng(1).random((1, 64)).astype(np.float32)


def alexnet_images(batch=ALEXNET_BATCH):
    return np.random.default_rng(0).standard_normal((batch, 3, 224, 224), np.float32)


def alexnet_record(impl, fn, x, params, **extra):
    """Median of ALEXNET_CALLS timed forward calls of the whole batch after the warm-up."""
    times, out = [], None
    for i in range(ALEXNET_WARMUP + ALEXNET_CALLS):
        t0 = time.perf_counter()
        out = fn(x)
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        if i >= ALEXNET_WARMUP:
            times.append(dt)
    out = np.asarray(out)
    assert out.shape == (len(x), 1000) and np.all(np.isfinite(out)), out.shape
    assert params == ALEXNET_PARAMS, params
    med = statistics.median(times)
    return dict(impl=impl, workload="alexnet_forward", batch=len(x), calls=ALEXNET_CALLS,
                median_batch_ms=1e3 * med, ms_per_image=1e3 * med / len(x),
                first_call_ms=1e3 * first, params=params, **extra, **memory())


def matmul_record(impl, fn, n=2048, reps=5):
    """float32 n x n @ n x n: one warm-up, then the median of `reps`."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    med = statistics.median(ts)
    return dict(impl=impl, workload="matmul_peak", dtype="float32", n=n, reps=reps,
                median_ms=1e3 * med, gflops=2 * n ** 3 / med / 1e9,
                best_gflops=2 * n ** 3 / min(ts) / 1e9)


def matmul_operands(n=2048):
    rng = np.random.default_rng(0)
    return rng.random((n, n)).astype(np.float32), rng.random((n, n)).astype(np.float32)


# ---- FLOPs per training step: 3 x the forward matmul/conv FLOPs (2 per multiply-add) --------
def flops(workload, vocab=None):
    per_token = {
        "rnn_charlm": lambda: 64 * 128 + 128 * 128 + 128 * vocab,
        "lstm_charlm": lambda: 4 * (64 * 128 + 128 * 128) + 128 * vocab,
        "transformer_charlm": lambda: 2 * (64 * 192 + 64 * 64 + 2 * 64 * 256 + 2 * 64 * 64)
        + 64 * vocab,
    }
    if workload == "mlp_digits":
        return 3 * BATCH * 2 * (64 * 128 + 128 * 10)
    if workload == "cnn_digits":
        return 3 * BATCH * 2 * (9 * 16 * 64 + 256 * 10)
    return 3 * BATCH * SEQ * 2 * per_token[workload]()


# ---- a worker's command line ---------------------------------------------------------------
def worker_args(workloads):
    """`WORKER WORKLOAD [VARIANT] [--budget S]`: which workload, which variant, and the
    training budget in seconds (char LMs: train for that long, then the held-out loss)."""
    import argparse

    ap = argparse.ArgumentParser(description="one workload of benchmarks/run_all.py")
    ap.add_argument("workload", choices=sorted(workloads))
    ap.add_argument("variant", nargs="?", default="")
    ap.add_argument("--budget", type=float, default=0.0)
    args = ap.parse_args()
    variants = workloads[args.workload]
    if args.variant not in variants:
        ap.error(f"{args.workload} has the variants {', '.join(map(repr, variants))}")
    return args
