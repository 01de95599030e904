"""The initializers: each one's distribution (bounds, mean, variance against its formula) and
the fans of dense, convolution and embedding parameters, through the stdlib modules that use
them, so that a wrong fan (a convolution's ignoring the kernel area) or a wrong scale fails."""

from __future__ import annotations

import numpy as np
import pytest

from dp.dsl.loader import load_text
from dp.interpreter.core.model import Model
from dp.interpreter.core.params import _fans

PROGRAM = """\
Dense: R^300 -> R^200
Dense(x) = FeedForward(x)

Convolution: R^(16, 12, 12) -> R^(24, 12, 12)
Convolution(x) = Conv(x; k = 5)

Conv1d: (R^40)^10 -> (R^30)^10
Conv1d(xs) = Conv1D(xs; k = 3)

Embedding: Token[500]^4 -> (R^64)^4
Embedding(ts) = map(EmbedToken, ts)

Scaled: R^50 -> R^50
Scaled(x) = x * s + t + u * x
  param s: R^(50) ~ normal(0.02)
  param t: R^(50) ~ uniform(0.3)
  param u: R^(50) ~ ones
"""


def _params(module: str, seed: int = 0) -> dict[str, np.ndarray]:
    model = Model(load_text(PROGRAM, "init.dp"), module)
    model.init(seed)
    return {path: v.astype(np.float64) for path, v in model.params.items()}


def _uniform(values: np.ndarray, bound: float) -> None:
    """Uniform on [-bound, bound]: inside the bounds, reaching near both, mean 0 and variance
    bound^2 / 3 within 5 standard errors (n is in the thousands or more)."""
    n = values.size
    assert np.abs(values).max() <= bound
    assert values.max() > 0.99 * bound and values.min() < -0.99 * bound
    var = bound**2 / 3
    assert abs(values.mean()) < 5 * np.sqrt(var / n)
    # the variance of x^2 for uniform x is bound^4 (1/5 - 1/9)
    assert abs(values.var() - var) < 5 * np.sqrt(bound**4 * (1 / 5 - 1 / 9) / n)


def _normal(values: np.ndarray, std: float) -> None:
    n = values.size
    assert abs(values.mean()) < 5 * std / np.sqrt(n)
    assert abs(values.var() - std**2) < 5 * std**2 * np.sqrt(2 / n)
    # a normal's tails: about 0.27% beyond 3 standard deviations
    assert 0.001 < np.mean(np.abs(values) > 3 * std) < 0.006


def test_fans_of_dense_convolution_and_vectors():
    assert _fans((200, 300)) == (300, 200)                 # [out, in]
    assert _fans((24, 16, 5, 5)) == (16 * 25, 24 * 25)     # the kernel area counts
    assert _fans((30, 40, 3)) == (40 * 3, 30 * 3)
    assert _fans((50,)) == (50, 50)


def test_dense_glorot():
    p = _params("Dense")
    _uniform(p["Dense.feedforward.W"], np.sqrt(6 / (300 + 200)))
    assert not p["Dense.feedforward.b"].any()


def test_convolution_fan_in_counts_the_kernel_area():
    p = _params("Convolution")
    _uniform(p["Convolution.conv.W"], 1 / np.sqrt(16 * 5 * 5))
    assert not p["Convolution.conv.b"].any()


def test_conv1d_fan_in_counts_the_kernel_width():
    p = _params("Conv1d")
    (w,) = [v for k, v in p.items() if k.endswith(".W")]
    assert w.shape == (30, 40, 3)
    _uniform(w, 1 / np.sqrt(40 * 3))


def test_embedding_is_standard_normal():
    p = _params("Embedding")
    (table,) = p.values()
    assert table.shape == (500, 64)
    _normal(table, 1.0)


def test_normal_uniform_and_ones_take_their_arguments():
    p = _params("Scaled")
    s, t, u = p["Scaled.s"], p["Scaled.t"], p["Scaled.u"]
    assert np.abs(s).max() < 6 * 0.02 and s.std() > 0.01
    assert np.abs(t).max() <= 0.3 and t.max() > 0.2
    np.testing.assert_array_equal(u, 1.0)


def test_normal_and_uniform_scale_exactly():
    """With many entries, the scale argument is the standard deviation / the bound."""
    many = PROGRAM.replace("R^(50)", "R^(20000)").replace("R^50", "R^20000")
    model = Model(load_text(many, "init.dp"), "Scaled")
    model.init(3)
    _normal(model.params["Scaled.s"].astype(np.float64), 0.02)
    _uniform(model.params["Scaled.t"].astype(np.float64), 0.3)


def test_the_seed_decides_and_differs():
    a, b, c = _params("Dense", 0), _params("Dense", 0), _params("Dense", 1)
    np.testing.assert_array_equal(a["Dense.feedforward.W"], b["Dense.feedforward.W"])
    assert not np.array_equal(a["Dense.feedforward.W"], c["Dense.feedforward.W"])


@pytest.mark.parametrize("module", ["Dense", "Convolution", "Embedding"])
def test_float32_values_are_the_float64_draws_rounded(module):
    """The model's float32 parameters are the initializer's draws rounded once."""
    m32 = Model(load_text(PROGRAM, "init.dp"), module)
    m64 = Model(load_text(PROGRAM, "init.dp"), module, dtype=np.float64)
    m32.init(0)
    m64.init(0)
    for path, v in m32.params.items():
        np.testing.assert_array_equal(v, m64.params[path].astype(np.float32))
