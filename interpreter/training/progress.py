"""Live training progress: a tqdm bar on a terminal (steps, loss, examples/s, time left) and
one plain line per epoch everywhere (so logs and pipes stay readable).

The first step a process runs also builds the plan for its batch size and loads the Numba
kernels (from the on-disk cache, or compiling them): its time is kept apart (`first`, which
`dp train` reports in its closing line) and the rate is the steady state's, without it."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, out=None, done: int = 0):
        self.out = sys.stdout if out is None else out  # read when called: redirect_stdout works
        self.bar = tqdm(total=total_steps, initial=done, unit="step", file=sys.stderr,
                        leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True)
        self.examples, self.seconds = 0, 0.0
        self.first: float | None = None  # seconds of this process's first step
        self._first_examples = 0

    def step(self, label, loss: float, examples: int, seconds: float) -> None:
        """A step of `examples` that took `seconds` (evaluations and checkpoints between
        steps do not count against the rate); `label()` says where the run is."""
        if self.first is None:
            self.first, self._first_examples = seconds, examples
        else:
            self.examples += examples
            self.seconds += seconds
        if not self.bar.disable:
            self.bar.update(1)
            if self.bar.n % 10 == 0:
                self.bar.set_postfix_str(f"{label()} loss {loss:.4f} {self._rate():,.0f} ex/s",
                                         refresh=False)

    def _rate(self) -> float:
        """Examples per second of the steady state; of the first step only when a period
        (an epoch of one batch) has no other."""
        if self.examples == 0 and self.first is not None:
            return self._first_examples / max(self.first, 1e-9)
        return self.examples / max(self.seconds, 1e-9)

    def period_done(self, label: str, mean_loss: float, scores: str = "") -> None:
        """One line for an epoch (or, for text, a tenth of the steps)."""
        line = f"{label}  loss {mean_loss:.4f}  " + (f"{scores}  " if scores else "") + \
            f"{self._rate():,.0f} examples/s"
        if self.bar.disable:
            print(line, file=self.out, flush=True)
        else:
            self.bar.write(line, file=self.out)
        self.examples, self.seconds = 0, 0.0

    def close(self) -> None:
        self.bar.close()
