"""JAX on the CPU (jax.jit, float32): the workloads of benchmarks/README.md, one per process,
each record a JSON line.

    PY benchmarks/peers/jax_peer.py WORKLOAD [--budget SECONDS]

Every training step is one jitted function (params, optimizer state, batch) -> (params,
optimizer state, loss), params and state donated, jax.value_and_grad, optax's sgd / adam /
adamw (PyTorch's update rules). A timed step = the batch + the jitted call + float(loss), which
waits for the result. Initial weights: torch's distributions drawn from
np.random.default_rng(0) in torch's parameter order. No XLA flags: XLA uses every core (2).
`compile_s` is the wall time of the steps during which a compilation happened; they stay in
the median like any other step.
"""
import math
import time

import common as C
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax


def linear(rng, n_out, n_in, bias=True):
    b = 1.0 / math.sqrt(n_in)
    p = {"w": rng.uniform(-b, b, (n_out, n_in)).astype(np.float32)}
    if bias:
        p["b"] = rng.uniform(-b, b, (n_out,)).astype(np.float32)
    return p


def layernorm(d):
    return {"g": np.ones(d, np.float32), "b": np.zeros(d, np.float32)}


def embedding(rng, n, d):
    return rng.standard_normal((n, d)).astype(np.float32)


def to_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


def n_params(tree):
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def dense(p, x):
    y = x @ p["w"].T
    return y + p["b"] if "b" in p else y


def ln(p, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * lax.rsqrt(var + eps) * p["g"] + p["b"]


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(loss_fn, opt):
    def step(params, state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return jax.jit(step, donate_argnums=(0, 1))


class Trainer:
    """Holds params and optimizer state; `step(*batch)` is one timed step's work (the
    jitted call and the loss as a float); `compile_s` adds up the steps that compiled."""

    def __init__(self, loss_fn, opt, params):
        self.jitted, self.params, self.state = make_step(loss_fn, opt), params, opt.init(params)
        self.compile_s = 0.0

    def step(self, *batch):
        n0, t0 = self.jitted._cache_size(), time.perf_counter()
        self.params, self.state, loss = self.jitted(self.params, self.state, *batch)
        loss = float(loss)
        if self.jitted._cache_size() != n0:
            self.compile_s += time.perf_counter() - t0
        return loss


# ---- models --------------------------------------------------------------------------------
def mlp_init(rng):
    return {"l1": linear(rng, 128, 64), "l2": linear(rng, 10, 128)}


def mlp_fwd(p, x):
    return dense(p["l2"], jax.nn.relu(dense(p["l1"], x)))


def cnn_init(rng):
    """numpy_peer.CNN's draws: conv (16, 3*3) as an HWIO kernel; fc on the H, W, C flatten."""
    c, f = linear(rng, 16, 9), linear(rng, 10, 256)
    return {"conv": {"w": c["w"].T.reshape(3, 3, 1, 16), "b": c["b"]}, "fc": f}


def cnn_fwd(p, x):                                   # x: (B, 64) -> NHWC (B, 8, 8, 1)
    x = x.reshape(-1, 8, 8, 1)
    h = lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + p["conv"]["b"])
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return dense(p["fc"], h.reshape(h.shape[0], -1))


def rnn_init(rng, vocab, emb=64, hidden=128, gates=1):
    return {"emb": embedding(rng, vocab, emb), "V": linear(rng, gates * hidden, emb),
            "U": linear(rng, gates * hidden, hidden, bias=False),
            "out": linear(rng, vocab, hidden)}


def rnn_fwd(p, x):
    """tanh RNN with lax.scan; the input projection V x_t + b for all t in one matmul."""
    xp = dense(p["V"], p["emb"][x])
    Ut = p["U"]["w"].T

    def cell(h, xt):
        h = jnp.tanh(h @ Ut + xt)
        return h, h

    h0 = jnp.zeros((x.shape[0], Ut.shape[0]), xp.dtype)
    _, hs = lax.scan(cell, h0, jnp.swapaxes(xp, 0, 1))
    return dense(p["out"], jnp.swapaxes(hs, 0, 1))


def lstm_fwd(p, x):
    """torch_peer.HandLSTM with lax.scan."""
    xp = dense(p["V"], p["emb"][x])
    Ut = p["U"]["w"].T
    H = Ut.shape[0]

    def cell(carry, xt):
        h, c = carry
        i, f, g, o = jnp.split(h @ Ut + xt, 4, axis=1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((x.shape[0], H), xp.dtype)
    _, hs = lax.scan(cell, (zeros, zeros), jnp.swapaxes(xp, 0, 1))
    return dense(p["out"], jnp.swapaxes(hs, 0, 1))


def gpt_init(rng, vocab, seq=64, d=64, d_ff=256, n_layers=2):
    p = {"tok": embedding(rng, vocab, d), "pos": embedding(rng, seq, d), "blocks": []}
    for _ in range(n_layers):
        p["blocks"].append({"ln1": layernorm(d), "qkv": linear(rng, 3 * d, d),
                            "proj": linear(rng, d, d), "ln2": layernorm(d),
                            "fc1": linear(rng, d_ff, d), "fc2": linear(rng, d, d_ff)})
    p["ln_f"] = layernorm(d)
    p["head"] = linear(rng, vocab, d)
    return p


def gpt_fwd(p, x, n_heads=4):
    B, T = x.shape
    h = p["tok"][x] + p["pos"][:T]
    D = h.shape[-1]
    hd = D // n_heads
    causal = jnp.tril(jnp.ones((T, T), bool))
    for blk in p["blocks"]:
        qkv = dense(blk["qkv"], ln(blk["ln1"], h)).reshape(B, T, 3, n_heads, hd)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hd))
        att = jax.nn.softmax(jnp.where(causal, att, -jnp.inf), axis=-1)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
        h = h + dense(blk["proj"], y)
        h = h + dense(blk["fc2"], jax.nn.relu(dense(blk["fc1"], ln(blk["ln2"], h))))
    return dense(p["head"], ln(p["ln_f"], h))


ALEXNET = (("conv", 3, 64, 11, 4, 2), ("pool",), ("conv", 64, 192, 5, 1, 2), ("pool",),
           ("conv", 192, 384, 3, 1, 1), ("conv", 384, 256, 3, 1, 1),
           ("conv", 256, 256, 3, 1, 1), ("pool",),
           ("dense", 9216, 4096), ("dense", 4096, 4096), ("dense", 4096, 1000))


def alexnet_init(rng):
    params = []
    for layer in ALEXNET:
        if layer[0] == "conv":
            _, cin, cout, k, _, _ = layer
            p = linear(rng, cout, cin * k * k)
            params.append({"w": p["w"].reshape(cout, cin, k, k), "b": p["b"]})
        elif layer[0] == "dense":
            params.append(linear(rng, layer[2], layer[1]))
    return params


def alexnet_fwd(params, x):                          # NCHW, as torch's
    it = iter(params)
    for i, layer in enumerate(ALEXNET):
        if layer[0] == "conv":
            p, (_, _, _, _, s, pad) = next(it), layer
            x = lax.conv_general_dilated(x, p["w"], (s, s), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = jax.nn.relu(x + p["b"][:, None, None])
        elif layer[0] == "pool":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")
        else:
            x = dense(next(it), x.reshape(x.shape[0], -1))
            x = jax.nn.relu(x) if i < len(ALEXNET) - 1 else x
    return x


# ---- workloads -----------------------------------------------------------------------------
def _digits(workload, init, fwd, opt):
    params = to_jax(init(np.random.default_rng(0)))
    tr = Trainer(lambda p, x, y: xent(fwd(p, x), y), opt, params)
    times, loss, Xte, yte = C.train_digits(tr.step, C.DIGITS_EPOCHS[workload],
                                           label_dtype=np.int32)
    acc = float(jnp.mean(jax.jit(fwd)(tr.params, Xte).argmax(1) == yte))
    return [C.digits_record("jax", workload, times, loss, acc, n_params(params))
            | {"compile_s": tr.compile_s}]


def mlp_digits(budget):
    return _digits("mlp_digits", mlp_init, mlp_fwd, optax.sgd(0.1, momentum=0.9))


def cnn_digits(budget):
    return _digits("cnn_digits", cnn_init, cnn_fwd, optax.adam(1e-3))


def _lm(workload, init, fwd, opt, budget):
    train, val, vocab = C.load_text(np.int32)
    params = to_jax(init(np.random.default_rng(0), vocab))
    P = n_params(params)
    tr = Trainer(lambda p, x, y: xent(fwd(p, x), y), opt, params)
    batches = ((jnp.asarray(x), jnp.asarray(y)) for x, y in C.lm_windows(train))
    times, losses = C.train_lm(tr.step, batches, budget=budget)
    xv, yv = (jnp.asarray(a) for a in C.lm_heldout(val))
    heldout = float(jax.jit(lambda p, x, y: xent(fwd(p, x), y))(tr.params, xv, yv))
    return [C.lm_record("jax", workload, times, losses, heldout, vocab,
                        C.flops(workload, vocab), P, budget) | {"compile_s": tr.compile_s}]


def rnn_charlm(budget):
    return _lm("rnn_charlm", rnn_init, rnn_fwd, optax.adam(3e-3), budget)


def lstm_charlm(budget):
    init = lambda rng, vocab: rnn_init(rng, vocab, gates=4)  # noqa: E731
    return _lm("lstm_charlm", init, lstm_fwd, optax.adam(3e-3), budget)


def transformer_charlm(budget):
    return _lm("transformer_charlm", gpt_init, gpt_fwd, optax.adamw(3e-3, weight_decay=0.01),
               budget)


def mlp_wide(budget):
    X, Y, rng = C.wide_data()
    xs = [jnp.asarray(x) for x, _ in C.wide_batches(X, Y)][:C.WIDE_POOL]  # on device first
    ys = [jnp.asarray(y) for _, y in C.wide_batches(X, Y)][:C.WIDE_POOL]
    params = to_jax({"l1": linear(rng, 2048, 512), "l2": linear(rng, 2048, 2048),
                     "l3": linear(rng, 10, 2048)})
    fwd = lambda p, x: dense(p["l3"], jax.nn.relu(dense(p["l2"], jax.nn.relu(  # noqa: E731
        dense(p["l1"], x)))))
    tr = Trainer(lambda p, x, y: jnp.mean((fwd(p, x) - y) ** 2), optax.sgd(0.01), params)
    times, losses = [], []
    for k in range(C.WIDE_STEPS):
        t0 = time.perf_counter()
        losses.append(tr.step(xs[k % C.WIDE_POOL], ys[k % C.WIDE_POOL]))
        times.append(time.perf_counter() - t0)
    return [C.wide_record("jax", times, losses, n_params(params)) | {"compile_s": tr.compile_s}]


def inference_mlp_small(budget):
    """Each call waits for its result; params as arguments, or baked in as constants."""
    params = to_jax(mlp_init(np.random.default_rng(0)))
    x = jnp.asarray(C.infer_input())
    f_args = jax.jit(mlp_fwd)
    f_const = jax.jit(lambda x: mlp_fwd(params, x))
    return [C.inference_record("jax", lambda: f_args(params, x).block_until_ready(),
                               variant="params_as_arguments"),
            C.inference_record("jax", lambda: f_const(x).block_until_ready(),
                               variant="params_as_constants")]


def alexnet_forward(budget):
    params = to_jax(alexnet_init(np.random.default_rng(0)))
    f = jax.jit(alexnet_fwd)
    x = jnp.asarray(C.alexnet_images())
    return [C.alexnet_record("jax", lambda x: f(params, x).block_until_ready(), x,
                             n_params(params))]


WORKLOADS = {"mlp_digits": mlp_digits, "cnn_digits": cnn_digits, "rnn_charlm": rnn_charlm,
             "lstm_charlm": lstm_charlm, "transformer_charlm": transformer_charlm,
             "mlp_wide": mlp_wide, "inference_mlp_small": inference_mlp_small,
             "alexnet_forward": alexnet_forward}

if __name__ == "__main__":
    args = C.worker_args({name: [""] for name in WORKLOADS})
    C.mark_baseline()
    for rec in WORKLOADS[args.workload](args.budget):
        C.emit(dict(rec, jax=jax.__version__, optax=optax.__version__))
