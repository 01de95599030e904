"""Edge values: every elementwise primitive on [-1, -0.0, 0, 1, inf, -inf, nan] (each operand,
every pair for the binary ones) gives NumPy float64's result, in float32 and in float64: NaN in
the same positions, the same infinities, a zero of the same sign wherever NumPy's is signed,
and the other values within 4 units of the dtype's precision.

gelu is the tanh form, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), compared with that
formula in NumPy (NaN at -inf, as -inf * 0, like the formula there and PyTorch's); it differs
from the exact form 0.5 x (1 + erf(x / sqrt(2))) by at most 5e-4 (4.7e-4 near x = -2.7).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from dp.interpreter.core.primitives import get
from dp.interpreter.core.primitives.elementwise import GELU_A, GELU_C

EDGES = [-1.0, -0.0, 0.0, 1.0, math.inf, -math.inf, math.nan]


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_A * x**3)))


UNARY = {
    "neg": np.negative, "identity": lambda x: x, "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "exp": np.exp, "log": np.log,
    "sqrt": np.sqrt, "abs": np.abs, "square": np.square, "gelu": _gelu,
    "softplus": lambda x: np.logaddexp(0.0, x),
}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": np.maximum, "minimum": np.minimum}


def _same(got: np.ndarray, want: np.ndarray, dtype, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == dtype and got.shape == want.shape, what
    got = got.astype(np.float64)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN positions")
    special = ~nan & (np.isinf(want) | (want == 0) | (np.abs(want) > np.finfo(dtype).max))
    np.testing.assert_array_equal(got[special], want[special].astype(dtype),
                                  err_msg=f"{what}: infinities and zeros")
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]),
                                  err_msg=f"{what}: the sign of zero")
    rest = ~nan & ~special
    np.testing.assert_allclose(got[rest], want[rest], rtol=4 * np.finfo(dtype).eps, atol=0,
                               err_msg=what)


def _quiet(fn, *args):
    with np.errstate(all="ignore"):  # log(-1), 0 / 0, inf - inf: the values are the test
        return fn(*args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_edge_values(name, dtype) -> None:
    x = np.array(EDGES, dtype)
    want = _quiet(UNARY[name], x.astype(np.float64))
    _same(_quiet(get(name).forward, x), want, dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_edge_values(name, dtype) -> None:
    a, b = (np.array(v, dtype) for v in zip(*itertools.product(EDGES, EDGES), strict=True))
    want = _quiet(BINARY[name], a.astype(np.float64), b.astype(np.float64))
    _same(_quiet(get(name).forward, a, b), want, dtype, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, compare", [(">", np.greater), ("<", np.less),
                                         (">=", np.greater_equal), ("<=", np.less_equal)])
def test_where_edge_values(op, compare, dtype) -> None:
    """A comparison with NaN is false: the second branch."""
    x, y = (np.array(v, dtype) for v in zip(*itertools.product(EDGES, EDGES), strict=True))
    a, b = y[::-1].copy(), x[::-1].copy()  # the branches hold edge values too
    want = np.where(compare(x.astype(np.float64), y.astype(np.float64)), a, b).astype(np.float64)
    _same(get("where").forward(x, y, a, b, op=op), want, dtype, f"where {op}")


def test_every_elementwise_primitive_is_covered() -> None:
    from test_gradcheck import BINARY as CASE_BINARY
    from test_gradcheck import POSITIVE
    from test_gradcheck import UNARY as CASE_UNARY
    assert set(UNARY) == set(CASE_UNARY) | set(POSITIVE)
    assert set(BINARY) == set(CASE_BINARY) | {"div"}


def test_gelu_tanh_form_is_within_5e_4_of_the_erf_form() -> None:
    x = np.linspace(-8, 8, 16001)
    exact = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    diff = np.abs(get("gelu").forward(x) - exact)
    assert 4e-4 < diff.max() < 5e-4 and abs(x[diff.argmax()] + 2.7) < 0.05
