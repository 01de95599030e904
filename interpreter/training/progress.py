"""Live training progress: a tqdm bar on a terminal (steps, loss, examples/s, time left) and
one plain line per epoch everywhere (so logs and pipes stay readable)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, out=None, done: int = 0):
        self.out = sys.stdout if out is None else out  # read when called: redirect_stdout works
        self.bar = tqdm(total=total_steps, initial=done, unit="step", file=sys.stderr,
                        leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True)
        self.examples, self.seconds = 0, 0.0

    def step(self, label, loss: float, examples: int, seconds: float) -> None:
        """A step of `examples` that took `seconds` (evaluations and checkpoints between
        steps do not count against the rate); `label()` says where the run is."""
        self.examples += examples
        self.seconds += seconds
        if not self.bar.disable:
            self.bar.update(1)
            if self.bar.n % 10 == 0:
                rate = self.examples / max(self.seconds, 1e-9)
                self.bar.set_postfix_str(f"{label()} loss {loss:.4f} {rate:,.0f} ex/s",
                                         refresh=False)

    def period_done(self, label: str, mean_loss: float, scores: str = "") -> None:
        """One line for an epoch (or, for text, a tenth of the steps)."""
        rate = self.examples / max(self.seconds, 1e-9)
        line = f"{label}  loss {mean_loss:.4f}  " + (f"{scores}  " if scores else "") + \
            f"{rate:,.0f} examples/s"
        if self.bar.disable:
            print(line, file=self.out, flush=True)
        else:
            self.bar.write(line, file=self.out)
        self.examples, self.seconds = 0, 0.0

    def close(self) -> None:
        self.bar.close()
