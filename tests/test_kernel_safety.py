"""Kernel memory safety: the kernels give the same results with Numba's bounds checks on
(NUMBA_BOUNDSCHECK=1) and as plain Python (NUMBA_DISABLE_JIT=1), and every primitive (what
calls the kernel wrappers) meets wrong dtypes, other layouts, an extra axis and an empty
batch with the right result or a Python exception (error[internal] in the command line),
never a crash or a wrong answer; no Numba TypingError reaches the command line's stderr.

The numbers: tests/test_kernels.py (all of it: about 15 s each way) passes under each
variable; the forward and backward of every primitive case of tests/test_gradcheck.py, in
float32, agree under each with the compiled kernels to 1e-6. Each runs in a process of its
own: Numba reads these variables when it is imported, and a segfault must fail a test, not
end the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

TESTS = ROOT / "tests"

# Every primitive case in float32: forward, and backward of a fixed cotangent, into an .npz.
VALUES = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from gradcheck import sample_inputs
from test_gradcheck import CASES
from dp.interpreter.core.primitives import apply_backward, apply_forward, get

out = {}
for case in CASES:
    prim = get(case.prim)
    xs = tuple(x.astype(np.float32) if x.dtype == np.float64 else x
               for x in sample_inputs(prim, case.args, case.params))
    y, saved = apply_forward(prim, *xs, **case.params)
    g = np.random.default_rng(1).standard_normal(np.shape(y)).astype(np.float32)
    wants = tuple(i not in prim.integer_inputs for i in range(len(xs)))
    grads = apply_backward(prim, g, y, xs, wants, saved, **case.params)
    out[case.id] = np.asarray(y)
    for i, d in enumerate(grads):
        if d is not None:
            out[f"{case.id} d{i}"] = np.asarray(d)
np.savez(sys.argv[1], **out)
print(len(CASES))
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_BOUNDSCHECK", "NUMBA_DISABLE_JIT")}
    return {**env, **extra}


def _values(tmp_path, name: str, **extra) -> dict[str, np.ndarray]:
    path = tmp_path / f"{name}.npz"
    proc = subprocess.run([sys.executable, "-c", VALUES, str(path), str(TESTS)], cwd=ROOT,
                          env=_env(**extra), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) >= 150
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("variable", ["NUMBA_BOUNDSCHECK", "NUMBA_DISABLE_JIT"])
def test_every_primitive_case_agrees_with_the_compiled_kernels(tmp_path, variable):
    compiled = _values(tmp_path, "compiled")
    other = _values(tmp_path, variable, **{variable: "1"})
    assert sorted(other) == sorted(compiled)
    for key, value in compiled.items():
        np.testing.assert_allclose(other[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.slow  # the whole kernel test file, twice: 30-60 s
@pytest.mark.parametrize("variable", ["NUMBA_BOUNDSCHECK", "NUMBA_DISABLE_JIT"])
def test_the_kernel_tests_pass_under(variable):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_kernels.py"], cwd=ROOT, env=_env(**{variable: "1"}),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# --- misuse of the primitives ------------------------------------------------------------------
# For every case: float64 inputs, non-contiguous and Fortran-ordered inputs, an extra leading
# axis and an empty batch. Each gives what the float32 contiguous call gives (to float32's
# precision for float64; stacked for an extra axis; the shape rule's shapes for an empty
# batch) or raises a Python exception; anything else is listed. A crash fails the process.
MISUSE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from gradcheck import sample_inputs
from test_gradcheck import CASES
from dp.interpreter.core.primitives import apply_backward, apply_forward, get

def run(prim, xs, params):
    y, saved = apply_forward(prim, *xs, **params)
    g = np.random.default_rng(1).standard_normal(np.shape(y)).astype(np.asarray(y).dtype)
    wants = tuple(i not in prim.integer_inputs for i in range(len(xs)))
    return np.asarray(y), g, apply_backward(prim, g, y, xs, wants, saved, **params)

def strided(x):
    if x.ndim == 0 or x.dtype.kind != "f":
        return x
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]

def fortran(x):
    return np.asfortranarray(x) if x.ndim >= 2 else x

WEIGHTED = ("linear", "matmul", "conv1d", "conv2d")
bad, raised, checked = [], {}, 0
for case in CASES:
    prim = get(case.prim)
    xs = tuple(x.astype(np.float32) if x.dtype == np.float64 else x
               for x in sample_inputs(prim, case.args, case.params))
    y, g, grads = run(prim, xs, case.params)
    def same(what, ys, gs, tol):
        if np.shape(ys) != np.shape(y) or not np.allclose(ys, y, rtol=tol, atol=tol,
                                                           equal_nan=True):
            bad.append(f"{case.id} {what}: forward differs")
        for i, (a, b) in enumerate(zip(gs, grads)):
            if (a is None) != (b is None) or b is not None and (
                    np.shape(a) != np.shape(b) or
                    not np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)):
                bad.append(f"{case.id} {what}: gradient {i} differs")
    variants = {
        "float64": (tuple(x.astype(np.float64) if x.dtype == np.float32 else x for x in xs),
                    1e-4),
        "strided": (tuple(strided(x) for x in xs), 1e-6),
        "fortran": (tuple(fortran(x) for x in xs), 1e-6),
    }
    for what, (vs, tol) in variants.items():
        checked += 1
        try:
            ys, _, gs = run(prim, vs, case.params)
        except Exception as e:
            raised[f"{case.id} {what}"] = type(e).__name__
            continue
        same(what, ys, gs, tol)
    # an extra leading axis on the first input (two copies): an error, or a result of the
    # shape the shape rule gives (a plan never asks what the rule refuses: any answer will do,
    # as long as the process lives)
    checked += 1
    xe = (np.stack([xs[0]] * 2),) + xs[1:]
    try:
        ys = np.asarray(apply_forward(prim, *xe, **case.params)[0])
    except Exception as e:
        raised[f"{case.id} extra axis"] = type(e).__name__
    else:
        try:
            want = tuple(prim.shape(*(x.shape for x in xe), **case.params))
        except Exception:
            want = None
        if want is not None and ys.shape != want:
            bad.append(f"{case.id} extra axis: {ys.shape}, the rule says {want}")
    # an empty batch: axis 0 of the first input made 0, and of the inputs of its shape (not
    # a product's weights), and of integer inputs of its length (labels); not of the rest
    # (parameters, broadcast operands)
    if xs[0].ndim >= 1:
        peers = case.prim not in WEIGHTED
        es = tuple(x[:0] if i == 0 or peers and x.shape == xs[0].shape or
                   i in prim.integer_inputs and x.ndim >= 1 and x.shape[0] == xs[0].shape[0]
                   else x for i, x in enumerate(xs))
        try:
            want = prim.shape(*(e.shape for e in es), **case.params)
        except Exception:
            want = None
        if want is not None:
            checked += 1
            try:
                ys, _, gs = run(prim, es, case.params)
            except Exception as e:
                raised[f"{case.id} empty"] = type(e).__name__
            else:
                if tuple(np.shape(ys)) != tuple(want):
                    bad.append(f"{case.id} empty: forward shape {np.shape(ys)}, rule {want}")
                for i, (d, e) in enumerate(zip(gs, es)):
                    if d is not None and np.shape(d) != e.shape:
                        bad.append(f"{case.id} empty: gradient {i} shape {np.shape(d)}")
print(json.dumps({"bad": bad, "raised": raised, "checked": checked}))
"""


def test_misused_primitives_give_the_right_result_or_an_exception():
    proc = subprocess.run([sys.executable, "-c", MISUSE, str(TESTS)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a segfault is -11
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["bad"] == [], "\n".join(found["bad"])
    assert found["checked"] >= 500
    assert not [k for k in found["raised"] if not k.endswith("extra axis")], found["raised"]


def test_cross_entropy_refuses_labels_that_do_not_match_its_rows():
    """Found by the misuse sweep: logits [2, 5, 7] with labels [5] made the kernel read ten
    labels from an array of five (a segfault); the wrapper now refuses them."""
    from dp.interpreter.core.primitives import get

    logits, labels = np.zeros((2, 5, 7), np.float32), np.zeros(5, np.int64)
    with pytest.raises(ValueError, match="cross_entropy: 5 labels for 10 rows of logits"):
        get("cross_entropy").forward(logits, labels)
    with pytest.raises(ValueError, match="5 labels for 10 rows"):
        get("cross_entropy").backward(np.ones(5, np.float32), None, (logits, labels),
                                      (True, False))


# --- the command line --------------------------------------------------------------------------
PROGRAM = """\
Net: R^4 -> R^3
Net(x) = FeedForward(x; act = tanh)

train Net on npz("d.npz"):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 4; steps 3

run:
  print accuracy(Net, npz("d.npz"))
"""


@pytest.mark.parametrize("dtype", ["float64", "float16", ">f4", "int32", "bool", "fortran"])
def test_no_numba_text_reaches_the_command_line(tmp_path, dtype):
    """Data of several dtypes numpy saves, and a Fortran-ordered array: `dp train` (and the
    run block after it) either works or prints dp's own error; never a Numba TypingError, a
    traceback or an internal error."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4))
    x = np.asfortranarray(x.astype(np.float32)) if dtype == "fortran" else x.astype(dtype)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 12))
    (tmp_path / "p.dp").write_text(PROGRAM)
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "train",
                           "p.dp"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    for text in ("TypingError", "numba", "Numba", "Traceback", "error[internal]"):
        assert text not in proc.stderr, proc.stderr
    if proc.returncode:
        assert proc.stderr.startswith("error["), proc.stderr
    else:  # trained, then the run block ran
        assert "accuracy(Net, npz(\"d.npz\")) = " in proc.stdout
