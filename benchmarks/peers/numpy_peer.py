"""Hand-written NumPy (forward and backward by hand, no autodiff library): the digits MLP and
CNN, batch-1 inference, and the float32 matmul peak of NumPy's BLAS. dp_peer.py runs these in
dp's own process, after dp, on the same batches; alone:

    python benchmarks/peers/numpy_peer.py mlp_digits

Initial weights: torch's distributions (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) drawn from
np.random.default_rng(0) in torch's parameter order (so not torch's numbers). float32.
"""

import common as C
import numpy as np

F32 = np.float32


def uniform_init(rng, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(F32)


def softmax_xent(z, y):
    """Mean cross-entropy and its gradient with respect to the logits z [B, K]."""
    B = z.shape[0]
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    s = e.sum(1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(B), y]))
    dz = e / s
    dz[np.arange(B), y] -= 1.0
    dz /= B
    return loss, dz


class SGDMomentum:
    """torch.optim.SGD(momentum=0.9, dampening=0): buf = m * buf + g; p -= lr * buf."""

    def __init__(self, params, lr, momentum):
        self.params, self.lr, self.m = params, F32(lr), F32(momentum)
        self.bufs = [np.zeros_like(p) for p in params]

    def step(self, grads):
        for p, g, b in zip(self.params, grads, self.bufs):
            b *= self.m
            b += g
            p -= self.lr * b


class Adam:
    """torch.optim.Adam's defaults (betas 0.9 / 0.999, eps 1e-8, bias correction)."""

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


class MLP:
    """64 -> 128 ReLU -> 10."""

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


def _im2col_index():
    """Gather index (64 * 9,) into a row of 65 values (64 pixels and one zero) that gives the
    3x3, padding-1 patches of an 8x8 image, row-major."""
    idx = np.full((8, 8, 3, 3), 64, np.int64)
    for i in range(8):
        for j in range(8):
            for di in range(3):
                for dj in range(3):
                    ii, jj = i + di - 1, j + dj - 1
                    if 0 <= ii < 8 and 0 <= jj < 8:
                        idx[i, j, di, dj] = ii * 8 + jj
    return idx.reshape(-1)


class CNN:
    """conv 3x3 pad 1, 1 -> 16, ReLU, max pool 2x2, flatten (H, W, C order), 256 -> 10. The
    convolution is im2col (B*64, 9) @ (9, 16), activations NHWC; the max pool's gradient goes
    to the first maximum of each window, as torch's."""

    IDX = _im2col_index()

    def __init__(self, rng):
        self.Wc = uniform_init(rng, (16, 9), 9)
        self.bc = uniform_init(rng, (16,), 9)
        self.Wf = uniform_init(rng, (10, 256), 256)
        self.bf = uniform_init(rng, (10,), 256)
        self.params = [self.Wc, self.bc, self.Wf, self.bf]

    def im2col(self, x):                             # x: (B, 64) -> (B*64, 9)
        B = x.shape[0]
        xe = np.empty((B, 65), F32)
        xe[:, :64] = x
        xe[:, 64] = 0
        return np.take(xe, self.IDX, axis=1).reshape(B * 64, 9)

    def forward(self, x):
        B = x.shape[0]
        cols = self.im2col(x)
        conv = cols @ self.Wc.T + self.bc           # (B*64, 16)
        a = np.maximum(conv, 0).reshape(B, 8, 8, 16)
        pooled = np.maximum(np.maximum(a[:, 0::2, 0::2], a[:, 0::2, 1::2]),
                            np.maximum(a[:, 1::2, 0::2], a[:, 1::2, 1::2]))  # (B, 4, 4, 16)
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
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):   # the first maximum wins
            m = a[:, i::2, j::2] == pooled
            m &= ~taken
            taken |= m
            np.multiply(m, dpooled, out=da[:, i::2, j::2])
        da = da.reshape(B * 64, 16)
        da *= conv > 0
        dWc = da.T @ cols
        dbc = da.sum(0)
        return loss, [dWc, dbc, dWf, dbf]


def _digits(workload, model, opt):
    def step(xb, yb):
        loss, grads = model.loss_and_grads(xb, yb)
        opt.step(grads)
        return loss

    times, loss, Xte, yte = C.train_digits(step, C.DIGITS_EPOCHS[workload])
    acc = float(np.mean(model.predict(Xte).argmax(1) == yte))
    params = int(sum(p.size for p in model.params))
    return C.digits_record("numpy", workload, times, loss, acc, params)


def mlp_digits(variant=""):
    model = MLP(np.random.default_rng(0))
    return [_digits("mlp_digits", model, SGDMomentum(model.params, lr=0.1, momentum=0.9))]


def cnn_digits(variant=""):
    model = CNN(np.random.default_rng(0))
    return [_digits("cnn_digits", model, Adam(model.params, lr=1e-3))]


def inference_mlp_small(variant=""):
    """(1, 64) row through gemm, and a 1-D vector through gemv; the faster is NumPy's best."""
    W1, b1, W2, b2 = MLP(np.random.default_rng(0)).params
    x = C.infer_input()
    x1 = x[0].copy()
    return [C.inference_record("numpy", lambda: np.maximum(x @ W1.T + b1, 0) @ W2.T + b2,
                               variant="gemm"),
            C.inference_record("numpy", lambda: W2 @ np.maximum(W1 @ x1 + b1, 0) + b2,
                               variant="gemv_1d")]


def matmul_peak(variant=""):
    a, b = C.matmul_operands()
    return [C.matmul_record("numpy", lambda: a @ b)]


WORKLOADS = {"mlp_digits": mlp_digits, "cnn_digits": cnn_digits,
             "inference_mlp_small": inference_mlp_small, "matmul_peak": matmul_peak}

if __name__ == "__main__":
    args = C.worker_args({name: [""] for name in WORKLOADS})
    C.mark_baseline()
    for rec in WORKLOADS[args.workload]():
        C.emit(rec)
