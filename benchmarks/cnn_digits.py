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
import numpy as np

from digits_bench import F32, main, run_dp, run_numpy, softmax_xent, uniform_init

EPOCHS = 15


# ---- copied from /work/shared/bench/numpy_ref.py: Adam, _im2col_index, CNN
# ---- (unchanged but for comments and the float32 alias F32)
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


def numpy_cnn():  # numpy_ref's CNN + Adam
    model = CNN(np.random.default_rng(0))
    return run_numpy(model, Adam(model.params, lr=1e-3), EPOCHS)


if __name__ == "__main__":
    main(__doc__, "W2 cnn_digits", "cnn_digits",
         (("dp", lambda: run_dp("digits_cnn.dp", EPOCHS)), ("numpy", numpy_cnn)))
