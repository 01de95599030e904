"""Benchmark W1 `mlp_digits`: median ms per training step of dp, hand-written NumPy and PyTorch.

As /work/shared/bench/README.md defines it (64 -> 128 ReLU -> 10 on the digits, SGD lr 0.1
momentum 0.9, batch 32, 20 epochs): a step = take the batch + zero grads + forward + loss +
backward + optimizer step + loss as a float; median after 20 warm-up steps. dp trains
programs/digits_mlp.dp through its Python API as `dp train` does; numpy_ref.py's MLP runs in
this process; torch_ref.py --only mlp_digits runs in a subprocess with --torch-python (or this
Python, if it has torch). Not used by the tests or CI.

    .venv/bin/python benchmarks/mlp_digits.py --torch-python /work/torchvenv/bin/python
"""
import numpy as np

from digits_bench import F32, main, run_dp, run_numpy, softmax_xent, uniform_init

EPOCHS = 20


# ---- copied from /work/shared/bench/numpy_ref.py: SGDMomentum, MLP
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


def numpy_mlp():  # numpy_ref's MLP + SGDMomentum
    model = MLP(np.random.default_rng(0))
    return run_numpy(model, SGDMomentum(model.params, lr=0.1, momentum=0.9), EPOCHS)


if __name__ == "__main__":
    main(__doc__, "W1 mlp_digits", "mlp_digits",
         (("dp", lambda: run_dp("digits_mlp.dp", EPOCHS)), ("numpy", numpy_mlp)))
