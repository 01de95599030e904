"""Training a model and using a trained one: the loop, atomic checkpoints, the metrics file,
the progress display, and the reports a run block prints (accuracy, loss, predictions,
timings, generated text)."""
