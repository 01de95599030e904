"""Dropout masks from a counter-based hash: no random state to carry, save or restore.

The mask entry at flat index i of the dropout numbered `site` in a plan, at training step
`step` of a run seeded `seed`, is a pure function of (seed, step, site, i): splitmix64's
finalizer (Steele, Lea and Flood 2014) of a key mixed from the first three, plus i times the
golden-ratio increment. A resumed run computes the same masks at the same steps, bit for bit,
whatever ran before, and the batch size changes only which indices exist.
"""

from __future__ import annotations

from numba import njit, uint64

_GOLDEN = uint64(0x9E3779B97F4A7C15)
_M1 = uint64(0xBF58476D1CE4E5B9)
_M2 = uint64(0x94D049BB133111EB)
_UNIT = 1.0 / 9007199254740992.0  # 2 ** -53


@njit(cache=True, error_model="numpy")
def _mix(z):
    z = (z ^ (z >> uint64(30))) * _M1
    z = (z ^ (z >> uint64(27))) * _M2
    return z ^ (z >> uint64(31))


@njit(cache=True, error_model="numpy")
def key(seed, step, site):
    """One 64-bit key for a dropout site at a step of a run."""
    z = _mix(uint64(seed) * _GOLDEN + uint64(1))
    z = _mix(z ^ (uint64(step) * _GOLDEN + uint64(2)))
    return _mix(z ^ (uint64(site) * _GOLDEN + uint64(3)))


@njit(cache=True, error_model="numpy")
def mask(seed, step, site, p, scale, out, start=0):
    """out[i] = 0 where the uniform of index start + i is below p, else scale (1 / (1 - p)).
    `start` > 0: this process holds a slice of the batch that begins there (data-parallel)."""
    k = key(seed, step, site)
    for i in range(out.size):
        h = _mix(k + uint64(start + i + 1) * _GOLDEN)
        out[i] = 0.0 if float(h >> uint64(11)) * _UNIT < p else scale
