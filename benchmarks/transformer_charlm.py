"""Benchmark W4 `transformer_charlm`: median ms per training step of dp and PyTorch, and the
held-out loss each reaches.

As /work/shared/bench/README.md defines it (the rnn_charlm text, windows and step; 2 pre-norm
blocks, d 64, 4 heads, FF 256, learned positions, causal, final LayerNorm; AdamW lr 3e-3 with
weight decay 0.01; batch 32, seq 64, 300 steps, median after 10 warm-up steps). dp trains
programs/charlm_transformer.dp; torch_ref.py --only transformer_charlm runs hand-written
attention and F.scaled_dot_product_attention in a subprocess. Not used by the tests or CI.

    .venv/bin/python benchmarks/transformer_charlm.py --torch-python /work/torchvenv/bin/python
"""
from rnn_charlm import ROOT, arguments, compare, torch_records, train_dp


def main():
    args = arguments(__doc__)
    source = (ROOT / "programs" / "charlm_transformer.dp").read_text()
    compare(args, "W4 transformer_charlm", lambda: train_dp(source),
            lambda py: torch_records([py, args.torch_ref, "--only", "transformer_charlm"],
                                     "transformer_charlm"))


if __name__ == "__main__":
    main()
