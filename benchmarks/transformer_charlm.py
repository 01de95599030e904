"""Benchmark transformer_charlm alone: median ms per training step of dp and PyTorch, and the
held-out loss each reaches, for quick A/B timing (benchmarks/run_all.py runs every workload
and peer).

As benchmarks/README.md defines it (the rnn_charlm text, windows and step; 2 pre-norm blocks,
d 64, 4 heads, FF 256, learned positions, causal, final LayerNorm; AdamW lr 3e-3 with weight
decay 0.01; batch 32, seq 64, 300 steps, median after 10 warm-up steps). dp trains
programs/charlm_transformer.dp; torch_peer.py transformer_charlm runs hand-written attention
(torch) and F.scaled_dot_product_attention (torch_fused) in subprocesses. Not used by the
tests or CI.

    .venv/bin/python benchmarks/transformer_charlm.py --torch-python /tmp/torchvenv/bin/python
"""
from rnn_charlm import ROOT, arguments, compare, torch_records, train_dp


def main():
    args = arguments(__doc__)
    source = (ROOT / "programs" / "charlm_transformer.dp").read_text()
    compare(args, "transformer_charlm", lambda: train_dp(source),
            lambda py: torch_records(py, "transformer_charlm", ["hand", "fused"]))


if __name__ == "__main__":
    main()
