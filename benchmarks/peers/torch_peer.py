"""PyTorch eager on the CPU (float32, 2 threads, torch.manual_seed(0) before each model): the
workloads of benchmarks/README.md, one per process, each record a JSON line.

    PY benchmarks/peers/torch_peer.py WORKLOAD [hand|fused] [--budget SECONDS]

`hand` is the model written with plain tensor operations (the recurrence as a Python loop
over the 64 steps, attention as matrix products and a masked softmax); `fused` is PyTorch's
own kernel for it (nn.RNN, nn.LSTM, F.scaled_dot_product_attention), reported as torch_fused.
"""
import math
import time

import common as C
import torch
import torch.nn as nn
import torch.nn.functional as F


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def mlp_small():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):                          # x: (B, 64) rows of 8x8 images
        h = F.max_pool2d(F.relu(self.conv(x.view(-1, 1, 8, 8))), 2)   # (B, 16, 4, 4)
        return self.fc(h.flatten(1))


class HandRNN(nn.Module):
    """h_t = tanh(U h_{t-1} + V x_t + b): V x_t + b for all t in one matmul, then a loop."""

    def __init__(self, vocab, emb=64, hidden=128):
        super().__init__()
        self.hidden = hidden
        self.emb = nn.Embedding(vocab, emb)
        self.V = nn.Linear(emb, hidden)
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        B, T = x.shape
        xp = self.V(self.emb(x))
        h = xp.new_zeros(B, self.hidden)
        hs = []
        for t in range(T):
            h = torch.tanh(self.U(h) + xp[:, t])
            hs.append(h)
        return self.out(torch.stack(hs, 1))


class HandLSTM(nn.Module):
    """i, f, g, o = split(W x_t + b + U h_{t-1}); c = f c + i g; h = o tanh(c) (sigmoid on
    i, f, o; tanh on g): W x_t + b for all t in one matmul, then a loop."""

    def __init__(self, vocab, emb=64, hidden=128):
        super().__init__()
        self.hidden = hidden
        self.emb = nn.Embedding(vocab, emb)
        self.W = nn.Linear(emb, 4 * hidden)
        self.U = nn.Linear(hidden, 4 * hidden, bias=False)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        B, T = x.shape
        xp = self.W(self.emb(x))
        h = xp.new_zeros(B, self.hidden)
        c = xp.new_zeros(B, self.hidden)
        hs = []
        for t in range(T):
            i, f, g, o = (self.U(h) + xp[:, t]).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        return self.out(torch.stack(hs, 1))


class LibRNN(nn.Module):
    """nn.RNN or nn.LSTM (two bias vectors each) between the embedding and the output."""

    def __init__(self, vocab, kind, emb=64, hidden=128):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = (nn.RNN(emb, hidden, nonlinearity="tanh", batch_first=True) if kind == "rnn"
                    else nn.LSTM(emb, hidden, batch_first=True))
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


class Block(nn.Module):
    def __init__(self, d, n_heads, d_ff, sdpa):
        super().__init__()
        self.nh, self.hd, self.sdpa = n_heads, d // n_heads, sdpa
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, d_ff)
        self.fc2 = nn.Linear(d_ff, d)

    def forward(self, x, mask):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q = q.view(B, T, self.nh, self.hd).transpose(1, 2)
        k = k.view(B, T, self.nh, self.hd).transpose(1, 2)
        v = v.view(B, T, self.nh, self.hd).transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
            att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
            y = att @ v
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.relu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Decoder-only, pre-LayerNorm, learned positions, causal, ReLU feed-forward."""

    def __init__(self, vocab, sdpa, seq=64, d=64, n_heads=4, d_ff=256, n_layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList([Block(d, n_heads, d_ff, sdpa) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1))

    def forward(self, x):
        B, T = x.shape
        h = self.tok(x) + self.pos(torch.arange(T))
        for blk in self.blocks:
            h = blk(h, self.mask)
        return self.head(self.ln_f(h))


def alexnet():
    """torchvision's single-tower AlexNet without dropout (61,100,840 parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 1000))


# ---- workloads -----------------------------------------------------------------------------
def _digits(workload, model, opt):
    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    times, loss, Xte, yte = C.train_digits(step, C.DIGITS_EPOCHS[workload],
                                           index=torch.from_numpy, wrap=torch.from_numpy)
    with torch.no_grad():
        model.eval()
        acc = (model(torch.from_numpy(Xte)).argmax(1) == torch.from_numpy(yte)).float().mean()
    return [C.digits_record("torch", workload, times, loss, acc.item(), n_params(model))]


def mlp_digits(variant, budget):
    torch.manual_seed(0)
    model = mlp_small()
    return _digits("mlp_digits", model, torch.optim.SGD(model.parameters(), lr=0.1,
                                                        momentum=0.9))


def cnn_digits(variant, budget):
    torch.manual_seed(0)
    model = SmallCNN()
    return _digits("cnn_digits", model, torch.optim.Adam(model.parameters(), lr=1e-3))


def _lm(workload, variant, budget, make_model, make_opt):
    train, val, vocab = C.load_text()
    torch.manual_seed(0)
    model = make_model(vocab)
    opt = make_opt(model.parameters())

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    batches = ((torch.from_numpy(x), torch.from_numpy(y)) for x, y in C.lm_windows(train))
    times, losses = C.train_lm(step, batches, budget=budget)
    xv, yv = (torch.from_numpy(a) for a in C.lm_heldout(val))
    with torch.no_grad():
        logits = model(xv)
        heldout = F.cross_entropy(logits.reshape(-1, vocab), yv.reshape(-1)).item()
    impl = "torch_fused" if variant == "fused" else "torch"
    return [C.lm_record(impl, workload, times, losses, heldout, vocab,
                        C.flops(workload, vocab), n_params(model), budget)]


def adam(params):
    return torch.optim.Adam(params, lr=3e-3)


def rnn_charlm(variant, budget):
    make = HandRNN if variant == "hand" else (lambda v: LibRNN(v, "rnn"))
    return _lm("rnn_charlm", variant, budget, make, adam)


def lstm_charlm(variant, budget):
    make = HandLSTM if variant == "hand" else (lambda v: LibRNN(v, "lstm"))
    return _lm("lstm_charlm", variant, budget, make, adam)


def transformer_charlm(variant, budget):
    return _lm("transformer_charlm", variant, budget, lambda v: TinyGPT(v, variant == "fused"),
               lambda p: torch.optim.AdamW(p, lr=3e-3))       # weight_decay 0.01 (default)


def mlp_wide(variant, budget):
    """As torch's own: X and the teacher from torch.randn after torch.manual_seed(0)."""
    torch.manual_seed(0)
    X = torch.randn(C.WIDE_POOL * C.WIDE_BATCH, 512)
    Y = X @ (torch.randn(512, 10) / math.sqrt(512))
    model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                          nn.Linear(2048, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times, losses = [], []
    for xb, yb in C.wide_batches(X, Y):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    return [C.wide_record("torch", times, losses, n_params(model))]


def inference_mlp_small(variant, budget):
    torch.manual_seed(0)
    model = mlp_small().eval()
    x = torch.from_numpy(C.infer_input())

    def no_grad():
        with torch.no_grad():
            return model(x)

    def inference_mode():
        with torch.inference_mode():
            return model(x)

    return [C.inference_record("torch", no_grad, variant="no_grad"),
            C.inference_record("torch", inference_mode, variant="inference_mode")]


def alexnet_forward(variant, budget):
    torch.manual_seed(0)
    model = alexnet().eval()
    x = torch.from_numpy(C.alexnet_images())

    def forward(x):
        with torch.inference_mode():
            return model(x)

    return [C.alexnet_record("torch", forward, x, n_params(model))]


def matmul_peak(variant, budget):
    a, b = (torch.from_numpy(m) for m in C.matmul_operands())
    return [C.matmul_record("torch", lambda: a @ b)]


VARIANTS = {"mlp_digits": [""], "cnn_digits": [""], "rnn_charlm": ["hand", "fused"],
            "lstm_charlm": ["hand", "fused"], "transformer_charlm": ["hand", "fused"],
            "mlp_wide": [""], "inference_mlp_small": [""], "alexnet_forward": [""],
            "matmul_peak": [""]}

if __name__ == "__main__":
    args = C.worker_args(VARIANTS)
    torch.set_num_threads(C.THREADS)
    C.mark_baseline()
    for rec in globals()[args.workload](args.variant, args.budget):
        C.emit(dict(rec, torch=torch.__version__, threads=torch.get_num_threads()))
