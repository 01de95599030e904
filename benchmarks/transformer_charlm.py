"""Benchmark W4 `transformer_charlm`: median ms per training step of dp and PyTorch, and the
held-out loss each reaches.

As /work/shared/bench/README.md defines it (the rnn_charlm text, windows and step; 2 pre-norm
blocks, d 64, 4 heads, FF 256, learned positions, causal, final LayerNorm; AdamW lr 3e-3 with
weight decay 0.01; batch 32, seq 64, 300 steps, median after 10 warm-up steps). dp trains
programs/charlm_transformer.dp; torch_ref.py --only transformer_charlm runs hand-written
attention and F.scaled_dot_product_attention in a subprocess. Not used by the tests or CI.

    .venv/bin/python benchmarks/transformer_charlm.py --torch-python /work/torchvenv/bin/python
"""
import argparse, importlib.util, sys  # noqa: E401
from pathlib import Path

from rnn_charlm import ROOT, torch_records, train_dp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per impl; the best median wins")
    ap.add_argument("--torch-python", help="a Python with torch (default: this one, if it has)")
    ap.add_argument("--torch-ref", default=str(ROOT.parent / "shared" / "bench" / "torch_ref.py"))
    args = ap.parse_args()
    source = (ROOT / "programs" / "charlm_transformer.dp").read_text()
    res = {"dp": min(train_dp(source) for _ in range(args.repeat))}
    py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    if py is None or not Path(args.torch_ref).is_file():
        print("torch: SKIPPED (pass --torch-python PATH and --torch-ref PATH)")
    else:
        for _ in range(args.repeat):
            command = [py, args.torch_ref, "--only", "transformer_charlm"]
            for k, v in torch_records(command, "transformer_charlm").items():
                res[k] = min(res.get(k, v), v)
    print(f"W4 transformer_charlm, best of {args.repeat} run(s); dp/impl <= 1: dp is at least "
          "as fast")
    print(f"{'impl':<12} {'ms/step':>8} {'tokens/s':>10} {'held-out':>9} {'train':>7} "
          f"{'dp/impl':>8}")
    for name, (med, heldout, final) in res.items():
        print(f"{name:<12} {1e3 * med:8.3f} {32 * 64 / med:10,.0f} {heldout:9.4f} {final:7.4f} "
              f"{res['dp'][0] / med:8.2f}")


if __name__ == "__main__":
    main()
