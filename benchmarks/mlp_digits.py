"""Benchmark mlp_digits alone: median ms per training step of dp, hand-written NumPy and
PyTorch, for quick A/B timing (benchmarks/run_all.py runs every workload and peer).

As benchmarks/README.md defines it (64 -> 128 ReLU -> 10 on the digits, SGD lr 0.1 momentum
0.9, batch 32, 20 epochs): a step = take the batch + zero grads + forward + loss + backward +
optimizer step + loss as a float; median after 20 warm-up steps. dp trains
programs/digits_mlp.dp through its Python API as `dp train` does; numpy_peer.py's MLP runs in
this process; torch_peer.py mlp_digits runs in a subprocess with --torch-python (or this
Python, if it has torch). Not used by the tests or CI.

    .venv/bin/python benchmarks/mlp_digits.py --torch-python /tmp/torchvenv/bin/python
"""
import numpy as np
from digits_bench import main, numpy_peer, run_dp, run_numpy

EPOCHS = 20


def numpy_mlp():  # numpy_peer's MLP + SGD with momentum
    model = numpy_peer.MLP(np.random.default_rng(0))
    return run_numpy(model, numpy_peer.SGDMomentum(model.params, lr=0.1, momentum=0.9), EPOCHS)


if __name__ == "__main__":
    main(__doc__, "mlp_digits", "mlp_digits",
         (("dp", lambda: run_dp("digits_mlp.dp", EPOCHS)), ("numpy", numpy_mlp)))
