"""Elementwise primitives: unary activations and math, and broadcasting binary arithmetic.

All NumPy: its ufuncs are SIMD-vectorised (tanh and exp included), which Numba's loops are not
without Intel SVML, so even GELU is faster as a chain of in-place NumPy calls than as a fused
Numba kernel (measured 7 us against 56 us on [32, 128] float32).

Constants are Python floats or ints, which NumPy 2 treats as weak scalars: float32 stays
float32. (A NumPy float64 scalar such as `np.sqrt(2.0)` would silently upcast.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..kernels import elementwise as K
from . import broadcast_shape, near_tie, near_zero, register, unbroadcast

GELU_C = math.sqrt(2.0 / math.pi)  # a Python float: no upcast
GELU_A = 0.044715


# ---------------------------------------------------------------------------------------------
# Unary: forward(x) and dx(g, out, x), registered through one helper

def _unary(name: str, forward: Callable, dx: Callable, *, smooth: bool = True,
           kinks: tuple = ()) -> None:
    def shape(x: tuple) -> tuple:
        return tuple(x)

    def fwd(x: np.ndarray) -> np.ndarray:
        return np.asarray(forward(x))  # ufuncs turn 0-d arrays into NumPy scalars

    def backward(g, out, inputs, wants):
        return (np.asarray(dx(g, out, inputs[0])) if wants[0] else None,)

    register(name, shape=shape, forward=fwd, backward=backward, smooth=smooth, kinks=kinks)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) for x < 0.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): exp never overflows, and large |x| stays exact.
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """t = tanh(c (x + a x^3)), computed in place in one fresh array (0-d arrays too)."""
    t = np.multiply(x, x, out=np.empty_like(x))
    t *= GELU_A
    t += 1
    t *= x
    t *= GELU_C
    return np.tanh(t, out=t)


def _gelu(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + t)."""
    y = _gelu_tanh(x)
    y += 1
    y *= x
    y *= 0.5
    return y


def _gelu_dx(g: np.ndarray, out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """g (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2))."""
    t = _gelu_tanh(x)
    d = np.multiply(t, t, out=np.empty_like(t))
    np.subtract(1, d, out=d)
    d *= x
    d *= GELU_C
    d *= 3 * GELU_A * (x * x) + 1
    d += t
    d += 1
    d *= 0.5
    d *= g
    return d


_unary("neg", np.negative, lambda g, out, x: np.negative(g))
_unary("identity", lambda x: x, lambda g, out, x: g)
# relu'(0) = 0 (the convention of PyTorch and JAX); relu of NaN is NaN.
_unary("relu", lambda x: np.maximum(x, 0), lambda g, out, x: K.relu_grad(g, x),
       smooth=False, kinks=(near_zero,))
_unary("tanh", np.tanh, lambda g, out, x: g * (1 - out * out))
_unary("sigmoid", _sigmoid, lambda g, out, x: g * (out * (1 - out)))
_unary("exp", np.exp, lambda g, out, x: g * out)
_unary("log", np.log, lambda g, out, x: g / x)
_unary("sqrt", np.sqrt, lambda g, out, x: g * 0.5 / out)
# abs'(0) = 0: np.sign(0) is 0.
_unary("abs", np.abs, lambda g, out, x: g * np.sign(x), smooth=False, kinks=(near_zero,))
_unary("square", np.square, lambda g, out, x: g * (2 * x))
_unary("gelu", _gelu, _gelu_dx)
_unary("softplus", _softplus, lambda g, out, x: g * _sigmoid(x))


# ---------------------------------------------------------------------------------------------
# Binary with NumPy broadcasting: forward(a, b) and (da, db) from the full-size gradients

def _binary(name: str, forward: Callable, da: Callable, db: Callable, *, smooth: bool = True,
            kinks: tuple = ()) -> None:
    """da/db map (g, out, a, b) to the gradient before unbroadcasting."""
    def shape(a: tuple, b: tuple) -> tuple:
        return broadcast_shape(name, a, b)

    def fwd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(forward(a, b))  # ufuncs turn 0-d arrays into NumPy scalars

    def backward(g, out, inputs, wants):
        a, b = inputs
        ga = unbroadcast(np.asarray(da(g, out, a, b)), a.shape) if wants[0] else None
        gb = unbroadcast(np.asarray(db(g, out, a, b)), b.shape) if wants[1] else None
        return ga, gb

    register(name, shape=shape, forward=fwd, backward=backward, smooth=smooth, kinks=kinks)


_binary("add", np.add, lambda g, o, a, b: g, lambda g, o, a, b: g)
_binary("sub", np.subtract, lambda g, o, a, b: g, lambda g, o, a, b: np.negative(g))
_binary("mul", np.multiply, lambda g, o, a, b: g * b, lambda g, o, a, b: g * a)
_binary("div", np.divide, lambda g, o, a, b: g / b, lambda g, o, a, b: -(g * o) / b)
# Ties send the whole gradient to the first argument (a >= b picks a for maximum).
_binary("maximum", np.maximum,
        lambda g, o, a, b: np.where(a >= b, g, 0), lambda g, o, a, b: np.where(a >= b, 0, g),
        smooth=False, kinks=(near_tie,))
_binary("minimum", np.minimum,
        lambda g, o, a, b: np.where(a <= b, g, 0), lambda g, o, a, b: np.where(a <= b, 0, g),
        smooth=False, kinks=(near_tie,))


# ---------------------------------------------------------------------------------------------
# where(x, y, a, b; op): a where `x op y` holds, else b, all four broadcast. The comparison has
# no gradient (it is piecewise constant); the branch not chosen gets exactly 0 (np.where, never
# a product with the mask, which would turn an inf or NaN of it into NaN). Lowering feeds each
# branch safe inputs (interpreter/core/lower.py: _where), so its own backward stays finite too.

COMPARE = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}


def _where_shape(x: tuple, y: tuple, a: tuple, b: tuple, *, op: str) -> tuple:
    if op not in COMPARE:
        raise ValueError(f"where: unknown comparison {op!r}")
    return broadcast_shape("where", broadcast_shape("where", x, y), broadcast_shape("where", a, b))


def _where_forward(x, y, a, b, *, op: str) -> np.ndarray:
    out = np.where(COMPARE[op](x, y), a, b)
    return np.asarray(out, dtype=np.result_type(a, b))


def _where_backward(g, out, inputs, wants, *, op: str):
    x, y, a, b = inputs
    mask = COMPARE[op](x, y)
    zero = [np.zeros(v.shape, g.dtype) if w else None for v, w in zip((x, y), wants)]
    ga = unbroadcast(np.where(mask, g, 0), a.shape) if wants[2] else None
    gb = unbroadcast(np.where(mask, 0, g), b.shape) if wants[3] else None
    return (*zero, ga, gb)


register("where", shape=_where_shape, forward=_where_forward, backward=_where_backward,
         smooth=False, kinks=(near_tie,))
