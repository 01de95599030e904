"""Benchmark cnn_digits alone: median ms per training step of dp, hand-written NumPy and
PyTorch, for quick A/B timing (benchmarks/run_all.py runs every workload and peer).

As benchmarks/README.md defines it (conv 3x3 pad 1, 1 -> 16, ReLU, max pool 2x2 -> 16x4x4,
flatten, linear 256 -> 10 on the digits; Adam lr 1e-3; batch 32; 15 epochs = 705 steps): a
step = take the batch + zero grads + forward + loss + backward + optimizer step + loss as a
float; median of the 685 steps after 20 warm-up steps. dp trains programs/digits_cnn.dp
through its Python API as `dp train` does; the flat [B, 64] batch is reshaped to dp's input
type R^(1, 8, 8) inside the timed step (a view, no copy). numpy_peer.py's im2col CNN runs in
this process on the same batches; torch_peer.py cnn_digits in a subprocess with
--torch-python (or this Python, if it has torch). Not used by the tests or CI.

    .venv/bin/python benchmarks/cnn_digits.py --torch-python /tmp/torchvenv/bin/python
"""
import numpy as np
from digits_bench import main, numpy_peer, run_dp, run_numpy

EPOCHS = 15


def numpy_cnn():  # numpy_peer's CNN + Adam
    model = numpy_peer.CNN(np.random.default_rng(0))
    return run_numpy(model, numpy_peer.Adam(model.params, lr=1e-3), EPOCHS)


if __name__ == "__main__":
    main(__doc__, "cnn_digits", "cnn_digits",
         (("dp", lambda: run_dp("digits_cnn.dp", EPOCHS)), ("numpy", numpy_cnn)))
