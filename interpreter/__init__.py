"""The back end of dp: everything after the checker, in four layers that import only downward.

- `core`: lowering a checked module to a plan of batched primitives, fusing it, executing it
  forward and in reverse, the primitives and their Numba kernels, parameters and optimizers.
- `data`: the data a program names (digits, npz, csv, text, generated tasks) and the streams
  of batches drawn from it.
- `training`: the training loop, checkpoints, metrics, progress, and the reports of a run
  block (accuracy, loss, predictions, generated text).
- `commands`: the `dp` command line, the REPL, `dp show`, `dp plot` and the summaries.

docs/architecture.md walks through the whole pipeline.
"""
