"""Writes regression.npz, the synthetic data of programs/regression.dp and regression_sign.dp:
two inputs in [-2, 2], the target f(x) = sin(2 x1) cos(x2) + 0.3 x2 with noise of standard
deviation 0.05, and the class of each example, the sign of f(x) (-1 or 1, without the noise).

    python programs/data/make_regression.py      (the same file every time: seed 15)

Arrays: x [1000, 2], y [1000], sign [1000] for training; x_test, y_test, sign_test [300] held
out. Everything float32 but the signs (int64).
"""

from __future__ import annotations

import os

import numpy as np

TRAIN, TEST, NOISE = 1000, 300, 0.05


def f(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * x[:, 0]) * np.cos(x[:, 1]) + 0.3 * x[:, 1]


def main() -> None:
    rng = np.random.default_rng(15)
    x = rng.uniform(-2, 2, (TRAIN + TEST, 2))
    clean = f(x)
    y = clean + NOISE * rng.standard_normal(len(x))
    sign = np.where(clean > 0, 1, -1).astype(np.int64)
    x, y = x.astype(np.float32), y.astype(np.float32)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regression.npz")
    np.savez_compressed(out, x=x[:TRAIN], y=y[:TRAIN], sign=sign[:TRAIN], x_test=x[TRAIN:],
                        y_test=y[TRAIN:], sign_test=sign[TRAIN:])
    print(f"wrote {out}: variance of y {np.var(y[:TRAIN]):.4f}, "
          f"{np.mean(sign[:TRAIN] > 0):.1%} positive")


if __name__ == "__main__":
    main()
