"""The batches of a training run in order, with a state a checkpoint can hold.

`dp train --resume` must see exactly the batches an uninterrupted run would have seen after
the checkpoint's step, so each stream can say where it is (`state`) and start there again
(`restore`). The state is the RandomState streams (as tensors and small numbers) plus, for
shuffled examples, how many batches of the current epoch were given.
"""

from __future__ import annotations

import json

import numpy as np

from . import dataset as data
from . import text


def _pack(state: tuple) -> tuple[np.ndarray, list]:
    kind, key, pos, has_gauss, gauss = state
    assert kind == "MT19937"
    return np.array(key, dtype=np.uint32), [int(pos), int(has_gauss), float(gauss)]


def _unpack(rng: np.random.RandomState, key: np.ndarray, rest: list) -> None:
    pos, has_gauss, gauss = rest
    rng.set_state(("MT19937", np.asarray(key, np.uint32), int(pos), int(has_gauss),
                   float(gauss)))


class _Stream:
    """State as (tensors "rng.NAME", one JSON string) so it fits a checkpoint."""

    rngs: dict[str, np.random.RandomState]

    def _states(self) -> dict[str, tuple]:
        return {name: rng.get_state() for name, rng in self.rngs.items()}

    def _extra(self) -> dict:
        return {}

    def _set_extra(self, extra: dict) -> None:
        pass

    def state(self) -> tuple[dict[str, np.ndarray], str]:
        tensors, rest = {}, {}
        for name, st in self._states().items():
            tensors[f"rng.{name}"], rest[name] = _pack(st)
        return tensors, json.dumps({"rngs": rest, **self._extra()})

    def restore(self, tensors: dict[str, np.ndarray], state: str) -> None:
        st = json.loads(state)
        for name, rng in self.rngs.items():
            _unpack(rng, tensors[f"rng.{name}"], st["rngs"][name])
        self._set_extra(st)


class ExampleStream(_Stream):
    """Examples shuffled once per epoch by RandomState(seed + 1), as the reference does. The
    state is the generator before the current epoch's permutation and the batches given."""

    def __init__(self, ds: data.Dataset, batch: int, seed: int):
        self.ds, self.batch = ds, batch
        self.rngs = {"order": np.random.RandomState(seed + 1)}
        self.per_epoch = data.num_batches(len(ds), batch)
        self._start, self._given = self.rngs["order"].get_state(), 0

    def _states(self) -> dict[str, tuple]:
        return {"order": self._start}  # the epoch's start, not after its shuffle

    def _extra(self) -> dict:
        return {"given": self._given}

    def _set_extra(self, extra: dict) -> None:
        self._start, self._given = self.rngs["order"].get_state(), int(extra["given"])

    def __iter__(self):
        rng = self.rngs["order"]
        while True:  # rng is at self._start here (restore puts it there too)
            for i, b in enumerate(data.batches(self.ds, self.batch, rng)):
                if i >= self._given:
                    self._given = i + 1
                    yield b
            self._start, self._given = rng.get_state(), 0


class WindowStream(_Stream):
    """Random windows of a text (RandomState(seed), one draw of starts per step, as the
    reference) and, for masked text, the masks (RandomState(seed + 1))."""

    def __init__(self, windows, batch: int, seed: int):
        self.windows = windows
        self.rngs = {"windows": np.random.RandomState(seed)}
        if windows.mask:
            self.rngs["mask"] = np.random.RandomState(seed + 1)
        self._draws = text.lm_batches(windows.corpus.train_ids, batch, windows.seq,
                                      span=windows.span, rng=self.rngs["windows"])

    def __iter__(self):
        w = self.windows
        for x, y in self._draws:
            yield (text.mask_windows(x, w.mask, w.corpus.mask_id, self.rngs["mask"])
                   if w.mask else (x, y))
