"""Elementwise primitives: unary activations and math, and broadcasting binary arithmetic.

Constants are Python floats or ints, which NumPy 2 treats as weak scalars: float32 stays
float32. (A NumPy float64 scalar such as `np.sqrt(2.0)` would silently upcast.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..kernels import elementwise as K
from . import broadcast_shape, near_tie, near_zero, register, unbroadcast


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Unary: forward(x) and dx(g, out, x), registered through one helper

def _unary(name: str, forward: Callable, dx: Callable, *, smooth: bool = True,
           kinks: tuple = ()) -> None:
    def shape(x: tuple) -> tuple:
        return tuple(x)

    def backward(g, out, inputs, wants):
        return (dx(g, out, inputs[0]) if wants[0] else None,)

    register(name, shape=shape, forward=forward, backward=backward, smooth=smooth, kinks=kinks)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) for x < 0.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _gelu(x: np.ndarray) -> np.ndarray:
    return K.gelu(_flat(x)).reshape(x.shape)


def _gelu_dx(g: np.ndarray, out: np.ndarray, x: np.ndarray) -> np.ndarray:
    return K.gelu_vjp(_flat(g), _flat(x)).reshape(x.shape)


_unary("neg", np.negative, lambda g, out, x: np.negative(g))
_unary("identity", lambda x: x, lambda g, out, x: g)
# relu'(0) = 0 (the convention of PyTorch and JAX); relu of NaN is NaN.
_unary("relu", lambda x: np.maximum(x, 0), lambda g, out, x: np.where(x > 0, g, 0),
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


# ---------------------------------------------------------------------------------------------
# Binary with NumPy broadcasting: forward(a, b) and (da, db) from the full-size gradients

def _binary(name: str, forward: Callable, da: Callable, db: Callable, *, smooth: bool = True,
            kinks: tuple = ()) -> None:
    """da/db map (g, out, a, b) to the gradient before unbroadcasting."""
    def shape(a: tuple, b: tuple) -> tuple:
        return broadcast_shape(name, a, b)

    def backward(g, out, inputs, wants):
        a, b = inputs
        ga = unbroadcast(da(g, out, a, b), a.shape) if wants[0] else None
        gb = unbroadcast(db(g, out, a, b), b.shape) if wants[1] else None
        return ga, gb

    register(name, shape=shape, forward=forward, backward=backward, smooth=smooth, kinks=kinks)


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
