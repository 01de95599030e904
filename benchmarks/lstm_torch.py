"""The rnn_charlm workload with nn.LSTM in place of nn.RNN, for benchmarks/rnn_charlm.py
--cell LSTM (not a reference workload of ../shared/bench, so it lives here). It reuses the
reference's data, windows, timed step and held-out sample from torch_ref.py, whose folder
is the first argument. Prints one JSON line like torch_ref.py's."""
import sys

sys.path.insert(0, sys.argv[1])
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch_ref as ref  # noqa: E402


class LibLSTM(nn.Module):
    def __init__(self, vocab, emb=64, hidden=128):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


if __name__ == "__main__":
    torch.set_num_threads(ref.THREADS)
    ref._lm_workload("rnn_charlm_nnLSTM", LibLSTM, lambda p: torch.optim.Adam(p, lr=3e-3),
                     lambda vocab: 4 * ref.flops_rnn(vocab))
