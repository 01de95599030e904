"""Parameters: one flat float32 buffer, a view per parameter path, and the initializers.

Keeping every parameter (and its gradient) in one contiguous buffer makes an optimizer step a
single kernel call, whatever the number of layers.
"""

from __future__ import annotations

import numpy as np

from .plan import ParamSpec


def allocate(specs: dict[str, ParamSpec], dtype=np.float32):
    """A zeroed flat buffer and a dict of reshaped views into it, in plan order."""
    sizes = [int(np.prod(s.shape, dtype=np.int64)) for s in specs.values()]
    flat = np.zeros(sum(sizes), dtype=dtype)
    views, start = {}, 0
    for (path, spec), size in zip(specs.items(), sizes, strict=True):
        views[path] = flat[start:start + size].reshape(spec.shape)
        start += size
    return flat, views


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def initialize(specs: dict[str, ParamSpec], views: dict[str, np.ndarray],
               rng: np.random.Generator) -> None:
    """Fill each view by its initializer, in plan order (so a seed gives the same model)."""
    for path, spec in specs.items():
        view = views[path]
        fan_in, fan_out = _fans(spec.shape)
        if spec.init == "zeros":
            view[...] = 0
        elif spec.init == "ones":
            view[...] = 1
        elif spec.init == "glorot":
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            view[...] = rng.uniform(-bound, bound, spec.shape)
        elif spec.init == "fan_in":  # PyTorch's default for Linear and Conv weights
            bound = 1.0 / np.sqrt(fan_in)
            view[...] = rng.uniform(-bound, bound, spec.shape)
        elif spec.init == "normal":
            view[...] = rng.normal(0.0, spec.init_args[0], spec.shape)
        elif spec.init == "uniform":
            a = spec.init_args[0]
            view[...] = rng.uniform(-a, a, spec.shape)
        else:  # the checker only lets known initializers through
            raise ValueError(f"initializer {spec.init!r} not implemented")


def count(specs: dict[str, ParamSpec]) -> int:
    return sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs.values())
