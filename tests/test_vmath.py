"""kernels/vmath.py: the vectorisable float32 exp against NumPy's float64 exp over the whole
float32 range (every 127th bit pattern, and the edges), and its special values; in float64
the kernels' exp_ is libm's. (tanh_ and sigmoid_ are held to their references in
tests/test_sequence_primitives.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp.interpreter.core.kernels.vmath import exp_
from numba import njit

FLT_MAX_LOG = np.float32(88.72283)   # the largest float32 whose exp is finite


@njit(cache=False, error_model="numpy")
def _exp(x, out):
    for i in range(x.size):
        out[i] = exp_(x[i])


def _run(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _exp(x, out)
    return out


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    """|got - exp(x)| in units of the float32 spacing at exp(x) (2^-149 for subnormals)."""
    want = np.exp(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - want) / np.spacing(want.astype(np.float32))


def test_exp32_within_an_ulp_over_the_float32_range() -> None:
    worst, overflow_mismatch = 0.0, 0
    for start in range(0, 1 << 32, 1 << 28):
        x = np.arange(start, start + (1 << 28), 127, dtype=np.uint64).astype(np.uint32)
        x = x.view(np.float32)
        x = x[np.isfinite(x)]
        got = _run(x)
        with np.errstate(over="ignore"):
            want = np.exp(x.astype(np.float64)).astype(np.float32)
        overflow_mismatch += int(np.sum(np.isinf(got) != np.isinf(want)))
        finite = np.isfinite(want)
        if finite.any():
            worst = max(worst, float(_ulps(got[finite], x[finite]).max()))
    assert overflow_mismatch == 0
    assert worst <= 1.03  # 1.023 over every float32 (checked once, exhaustively)


def test_exp32_edges() -> None:
    below = np.nextafter(FLT_MAX_LOG, np.float32(0))
    above = np.nextafter(FLT_MAX_LOG, np.float32(np.inf))
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-8, -1e-8, 1.0, -1.0, 0.5 * math.log(2),
                  below, FLT_MAX_LOG, -87.33654, -87.5, -100.0, -103.0, -103.9,
                  np.log(2.0 ** -149)], np.float32)
    got = _run(x)
    assert _ulps(got, x).max() <= 1.03
    assert got[0] == 1.0 and got[1] == 1.0
    assert np.isfinite(got[10]) and got[10] > 3.4e38
    assert 0 < got[-1] <= 2 * 2.0 ** -149          # the smallest subnormal, not 0
    specials = np.array([np.inf, -np.inf, np.nan, above, 89.0, 1e30, -104.0, -1e30,
                         -np.float32(3.4e38)], np.float32)
    got = _run(specials)
    np.testing.assert_array_equal(got, [np.inf, 0.0, np.nan, np.inf, np.inf, np.inf, 0.0, 0.0,
                                        0.0])


def test_exp32_nan_payload_passes_through() -> None:
    x = np.array([0x7FC00001, 0xFFC12345], np.uint32).view(np.float32)
    np.testing.assert_array_equal(_run(x).view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("x", [0.0, 1e-300, -745.0, 709.0, 710.0, 1.2345, -30.5])
def test_exp_in_float64_is_libm(x) -> None:
    got = _run(np.array([x]))[0]
    assert got == math.exp(x) if x < 709.8 else got == np.inf
