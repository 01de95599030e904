"""dp's side of the speed comparison, one workload per process (so that its first step is a
fresh process's: building the plan and loading the Numba kernels from the on-disk cache), and
the hand-written NumPy of numpy_peer.py after it in the same process, on the same batches.

    .venv/bin/python benchmarks/peers/dp_peer.py WORKLOAD [--budget SECONDS]
    .venv/bin/python benchmarks/peers/dp_peer.py mlp_wide --write-data   # for `dp train`

dp trains through its Python API with the calls `dp train` makes per step
(`Model.loss_and_grad`, `Optimizer.update`), on the programs of programs/ (charlm_rnn.dp with
`cell = LSTM` for lstm_charlm) and benchmarks/programs/mlp_wide.dp. Each record adds dp's
start-up: `import_s` (importing dp), `load_s` (parse, check, the Model and its initial
weights) and the first step, which is in `first_step_ms`.
"""
import sys
import time

T_START = time.perf_counter()
import common as C  # noqa: E402
import numpy as np  # noqa: E402
import numpy_peer  # noqa: E402
from dp.dsl.loader import load_programs  # noqa: E402
from dp.interpreter.core.model import Model  # noqa: E402
from dp.interpreter.core.optim import from_record  # noqa: E402
from dp.interpreter.data import text  # noqa: E402
from dp.interpreter.data.sources import dataset  # noqa: E402

IMPORT_S = time.perf_counter() - T_START
PROGRAMS = C.ROOT / "programs"
WIDE = C.ROOT / "benchmarks" / "programs" / "mlp_wide.dp"


class Trainer:
    """A program's train block as `dp train` runs it, one step per call."""

    def __init__(self, path, sets=None):
        t0 = time.perf_counter()
        tprog, _ = load_programs([str(path)], sets)
        self.config = config = tprog.train
        self.model = Model(tprog, config.model)
        self.optimizer = from_record(config.optimizer)
        self.model.init(config.seed)
        self.state = self.optimizer.init_state(self.model.flat.size, self.model.dtype)
        self.steps = 0
        self.load_s = time.perf_counter() - t0

    def step(self, xb, yb):
        self.steps += 1
        loss = self.model.loss_and_grad(self.config.loss, xb, yb)
        self.optimizer.update(self.model.flat, self.model.grad_flat, self.state, self.steps)
        return loss


def _startup(trainer, path):
    return {"import_s": IMPORT_S, "load_s": trainer.load_s,
            "program": str(path.relative_to(C.ROOT))}


def _digits(workload, program, numpy_run):
    path = PROGRAMS / program
    tr = Trainer(path)
    config, model = tr.config, tr.model
    assert (config.batch, config.epochs, config.seed) == (C.BATCH, C.DIGITS_EPOCHS[workload], 0)
    shape = model.arg_shapes[0]        # the flat [B, 64] rows as the input type: a view

    def step(xb, yb):
        return tr.step(xb.reshape((len(xb),) + shape), yb)

    times, loss, Xte, yte = C.train_digits(step, config.epochs)
    acc = float(np.mean(model.predict(Xte.reshape((len(Xte),) + shape)).argmax(-1) == yte))
    dp = C.digits_record("dp", workload, times, loss, acc, model.num_params)
    return [dp | _startup(tr, path)] + numpy_run()


def mlp_digits(budget):
    return _digits("mlp_digits", "digits_mlp.dp", numpy_peer.mlp_digits)


def cnn_digits(budget):
    return _digits("cnn_digits", "digits_cnn.dp", numpy_peer.cnn_digits)


def _lm(workload, path, budget, sets=None):
    tr = Trainer(path, sets)
    config, model = tr.config, tr.model
    assert (config.batch, config.steps, config.seed) == (C.BATCH, C.LM_STEPS, 0)
    windows = dataset(config.data, str(path.parent), model.arg_shapes[0])
    batches = windows.batches(C.BATCH, config.seed)
    train, val, vocab = C.load_text()            # the same text, windows and held-out sample
    first, same = next(batches), next(C.lm_windows(train))
    assert all(np.array_equal(a, b) for a, b in zip(first, same)), "dp's windows differ"
    batches = windows.batches(C.BATCH, config.seed)
    times, losses = C.train_lm(tr.step, batches, budget=budget)
    xv, yv = text.heldout_windows(windows.corpus.val_ids, windows.seq)
    assert all(np.array_equal(a, b) for a, b in zip((xv, yv), C.lm_heldout(val)))
    heldout = model.loss(config.loss, xv, yv)
    rec = C.lm_record("dp", workload, times, losses, heldout, vocab, C.flops(workload, vocab),
                      model.num_params, budget)
    return [rec | _startup(tr, path) | ({"sets": sets} if sets else {})]


def rnn_charlm(budget):
    return _lm("rnn_charlm", PROGRAMS / "charlm_rnn.dp", budget)


def lstm_charlm(budget):
    return _lm("lstm_charlm", PROGRAMS / "charlm_rnn.dp", budget, {"cell": "LSTM"})


def transformer_charlm(budget):
    return _lm("transformer_charlm", PROGRAMS / "charlm_transformer.dp", budget)


def mlp_wide(budget):
    tr = Trainer(WIDE)
    config = tr.config
    assert (config.batch, config.steps, config.loss) == (C.WIDE_BATCH, C.WIDE_STEPS,
                                                         "squared_error")
    X, Y, _ = C.wide_data()
    times, losses = [], []
    for xb, yb in C.wide_batches(X, Y):
        t0 = time.perf_counter()
        losses.append(tr.step(xb, yb))
        times.append(time.perf_counter() - t0)
    return [C.wide_record("dp", times, losses, tr.model.num_params) | _startup(tr, WIDE)]


def inference_mlp_small(budget):
    """The digits MLP at batch 1 the two public ways: a `dp.Net` call (`dp.load(...).model`)
    and `Model.predict`; the faster counts."""
    import dp

    path = PROGRAMS / "digits_mlp.dp"
    net = dp.load(str(path)).model("Digits", seed=0)
    model = Model(load_programs([str(path)])[0], "Digits")
    model.init(0)
    x = C.infer_input()
    assert net(x).shape == model.predict(x).shape == (1, 10)
    return [C.inference_record("dp", lambda: net(x), variant="net_call"),
            C.inference_record("dp", lambda: model.predict(x), variant="model_predict")
            ] + numpy_peer.inference_mlp_small()


def alexnet_forward(budget):
    """The standard library's AlexNet (no program file), `Model.predict` on the batch."""
    t0 = time.perf_counter()
    model = Model(load_programs([])[0], "AlexNet")
    model.init(0)
    load_s = time.perf_counter() - t0
    return [C.alexnet_record("dp", model.predict, C.alexnet_images(), model.num_params,
                             import_s=IMPORT_S, load_s=load_s)]


def matmul_peak(budget):
    """NumPy's BLAS, which dp's matrix products call."""
    return numpy_peer.matmul_peak()


def write_wide_data():
    X, Y, _ = C.wide_data()
    np.savez(WIDE.with_name("mlp_wide.npz"), x=X, y=Y)
    print(f"wrote {WIDE.with_name('mlp_wide.npz')}")


WORKLOADS = {"mlp_digits": mlp_digits, "cnn_digits": cnn_digits, "rnn_charlm": rnn_charlm,
             "lstm_charlm": lstm_charlm, "transformer_charlm": transformer_charlm,
             "mlp_wide": mlp_wide, "inference_mlp_small": inference_mlp_small,
             "alexnet_forward": alexnet_forward, "matmul_peak": matmul_peak}

if __name__ == "__main__":
    if sys.argv[1:] == ["mlp_wide", "--write-data"]:
        write_wide_data()
        sys.exit(0)
    args = C.worker_args({name: [""] for name in WORKLOADS})
    C.mark_baseline()
    for rec in WORKLOADS[args.workload](args.budget):
        C.emit(rec)
