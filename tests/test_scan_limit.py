"""A scan whose cell has no fused kernel is unrolled, one inlined step per element, when the
model is built; the checker refuses a sequence longer than MAX_SCAN (dsl/instances.py) at once,
instead of a model that takes minutes, or forever, to build. A cell the kernels run is never
unrolled, so no length limits it. The golden message is tests/programs/errors/scan_limit.err."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl import load_text
from dp.dsl.errors import DpError
from dp.dsl.instances import MAX_SCAN
from dp.interpreter.core import lower as lower_module
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import PlanError

CELL = """
Cell: (R^h, R^d) -> R^h
Cell(h, x) = tanh(U h + V x)
  param U: R^(h, h) ~ fan_in
  param V: R^(h, d) ~ fan_in

Net: (R^2)^{n} -> R^3
Net(xs) = seq_last(SequenceRNN(xs; cell = {cell}, h = 3))
"""


def _program(n: int, cell: str = "Cell"):
    return load_text(CELL.replace("{n}", str(n)).replace("{cell}", cell))


def test_a_sequence_past_the_limit_fails_at_once():
    start = time.perf_counter()
    code, out, err = dp_here("check", "tests/programs/errors/scan_limit.dp", cwd=ROOT)
    assert time.perf_counter() - start < 10  # about 0.1 s: a guard against unrolling, not a
    # speed test (10^9 steps would never finish), with room for a busy CI machine
    assert code == 1 and out == ""
    assert err.startswith("error[limit]: scan unrolls its cell 1000000000 times here, one step "
                          "per element of the sequence, more than the limit of 10,000\n")


@pytest.mark.parametrize("cell", ["Cell", "SimpleRNN(; act = relu)"])
def test_one_step_past_the_limit_is_refused(cell):
    """A cell that declares a kernel but binds another activation is unrolled too."""
    with pytest.raises(DpError) as info:
        _program(MAX_SCAN + 1, cell)
    err = info.value
    assert (err.kind, err.message) == (
        "limit", f"scan unrolls its cell {MAX_SCAN + 1} times here, one step per element of "
                 f"the sequence, more than the limit of {MAX_SCAN:,}")
    assert (err.span.line, err.span.col) == (8, 20)  # the call of SequenceRNN
    assert "inside SequenceRNN, at stdlib/sequences.dp:32" in err.notes


def test_a_sequence_at_the_limit_builds_in_seconds():
    tprog = _program(MAX_SCAN)
    start = time.perf_counter()
    model = Model(tprog, "Net", dtype=np.float64)
    assert time.perf_counter() - start < 20  # about 1 s; the limit is set so
    prims = [e.prim for e in model._executable(1, None).plan.eqns]
    assert prims.count("tanh") == MAX_SCAN  # one step per element: unrolled


@pytest.mark.parametrize("cell, kernel", [("SimpleRNN", "rnn_scan"), ("LSTM", "lstm_scan")])
def test_a_cell_the_kernels_run_has_no_limit(cell, kernel):
    n = 10 * MAX_SCAN
    model = Model(_program(n, cell), "Net", dtype=np.float64)
    model.init(0)
    xs = np.random.default_rng(0).normal(size=(1, n, 2))
    out = model.predict(xs)
    assert out.shape == (1, 3) and np.isfinite(out).all()
    assert kernel in {e.prim for e in model._executable(1, None).plan.eqns}


def test_lowering_refuses_what_the_checker_refuses(monkeypatch):
    """Lowering makes the same decision and never unrolls past the limit: with no kernels to
    fuse (as if the checker's decision and lowering's disagreed), an LSTM past the limit stops
    at once as a bug in dp, not a model that takes forever to build."""
    tprog = _program(MAX_SCAN + 1, "LSTM")
    monkeypatch.setattr(lower_module, "SCAN_KERNELS", {})
    with pytest.raises(PlanError, match=f"scan unrolls its cell {MAX_SCAN + 1} times here"):
        Model(tprog, "Net")
