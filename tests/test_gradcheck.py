"""Every primitive's backward rule against float64 central differences.

`CASES` is the shared table of primitive cases: other tests (completeness, kernels vs
reference, shape rules) import it. Each primitive has at least three, with a size-1 case and a
broadcast case where broadcasting applies; shapes stay within 5 x 7 (images [B, C, H, W] within
3 x 3 x 7 x 7).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from dp.interpreter.core.primitives import PRIMITIVES, apply_backward, apply_forward, get
from gradcheck import PATHS, TWO_PATH, Arg, check_grads, check_primitive, force_path, sample_inputs


@dataclass(frozen=True)
class Case:
    prim: str
    args: tuple[Arg, ...]
    params: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        shapes = "_".join("x".join(map(str, a.shape)) or "scalar" for a in self.args)
        extra = "_".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.prim}[{shapes}{'_' + extra if extra else ''}]"


def _u(*shape: int) -> Arg:
    return Arg(shape)


UNARY = ["neg", "relu", "tanh", "sigmoid", "exp", "abs", "square", "gelu", "softplus",
         "identity"]
POSITIVE = ["log", "sqrt"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]
UNARY_SHAPES = [(1,), (5,), (4, 7), (2, 3, 4), ()]
BINARY_SHAPES = [((4, 5), (4, 5)), ((1,), (1,)), ((4, 5), (1, 5)), ((3, 1), (1, 7)),
                 ((2, 3, 4), (4,)), ((5, 1), ()), ((), ())]

CASES: list[Case] = []
CASES += [Case(p, (_u(*s),)) for p in UNARY for s in UNARY_SHAPES]
CASES += [Case(p, (Arg(s, "positive"),)) for p in POSITIVE for s in UNARY_SHAPES]
CASES += [Case(p, (_u(*a), _u(*b))) for p in BINARY for a, b in BINARY_SHAPES]
CASES += [Case("div", (_u(*a), Arg(b, "nonzero"))) for a, b in BINARY_SHAPES]
# where(x, y, a, b; op): a where x op y, else b; all four broadcast (a threshold, a number).
CASES += [Case("where", tuple(_u(*s) for s in shapes), {"op": op}) for shapes, op in [
    (((4, 5), (4, 5), (4, 5), (4, 5)), ">"), (((1,), (1,), (1,), (1,)), "<"),
    (((4, 5), (), (4, 5), ()), ">="), (((3, 1), (1, 7), (3, 7), (7,)), "<="),
    (((), (), (), ()), ">")]]
CASES += [
    Case("linear", (_u(5, 7), _u(3, 7))),
    Case("linear", (_u(1, 1), _u(1, 1))),
    Case("linear", (_u(2, 3, 4), _u(5, 4))),          # W broadcast over two leading axes
    Case("linear", (_u(5, 7), _u(3, 7), _u(3))),      # with the bias fuse.py folds in
    Case("linear", (_u(2, 3, 4), _u(5, 4), _u(5))),
    Case("linear", (_u(5, 7), _u(3, 7), _u(3)), {"relu": True}),   # fuse.py's relu(W x + b)
    Case("linear", (_u(2, 3, 4), _u(5, 4), _u(5)), {"relu": True}),
    Case("linear", (_u(4, 6), _u(3, 6)), {"relu": True}),
    Case("linear", (_u(1, 1), _u(1, 1), _u(1)), {"relu": True}),
    Case("matmul", (_u(3, 4), _u(4, 5))),
    Case("matmul", (_u(1, 1), _u(1, 1))),
    Case("matmul", (_u(2, 3, 4), _u(4, 5))),
    Case("matmul", (_u(2, 1, 3, 4), _u(5, 4, 2))),    # both batch shapes broadcast
    Case("matmul", (_u(4,), _u(2, 4, 5))),            # vector @ batched matrix
    Case("matmul", (_u(3, 4), _u(4,))),               # matrix @ vector
    Case("matmul", (_u(4,), _u(4,))),                 # vector @ vector -> scalar
    Case("transpose", (_u(3, 4),), {"axes": (1, 0)}),
    Case("transpose", (_u(1, 1),), {"axes": (1, 0)}),
    Case("transpose", (_u(2, 3, 4),), {"axes": (2, 0, 1)}),
    Case("reshape", (_u(3, 4),), {"shape": (12,)}),
    Case("reshape", (_u(1,),), {"shape": (1, 1)}),
    Case("reshape", (_u(2, 6),), {"shape": (2, -1, 3)}),
    Case("take", (_u(3, 4, 5),), {"axis": 1, "index": 0}),
    Case("take", (_u(1, 1),), {"axis": 1, "index": 0}),
    Case("take", (_u(2, 3, 4),), {"axis": 1, "index": 2}),
    Case("fill", (_u(),), {"shape": (3, 4)}),
    Case("fill", (_u(),), {"shape": (1,)}),
    Case("fill", (_u(),), {"shape": (2, 3, 1)}),
    Case("stack", (_u(3, 4), _u(3, 4), _u(3, 4)), {"axis": 1}),
    Case("stack", (_u(1,),), {"axis": 0}),
    Case("stack", (_u(2, 3), _u(2, 3)), {"axis": 2}),
    Case("concat", (_u(3, 4), _u(2, 4)), {"axis": 0}),
    Case("concat", (_u(1, 1),), {"axis": 1}),
    Case("concat", (_u(2, 3, 1), _u(2, 3, 4), _u(2, 3, 2)), {"axis": 2}),
]
for _name in ["sum", "mean", "max"]:
    CASES += [
        Case(_name, (_u(4, 5),), {"axes": (1,)}),
        Case(_name, (_u(1, 1),), {"axes": (0, 1)}),
        Case(_name, (_u(2, 3, 4),), {"axes": (0, 2), "keepdims": True}),
        Case(_name, (_u(5,),), {"axes": (0,)}),
        Case(_name, (_u(3, 7),), {"axes": (0,)}),
    ]
CASES += [Case("sum", (_u(2, 3),), {"axes": ()})]
for _name in ["softmax", "log_softmax", "logsumexp"]:
    CASES += [Case(_name, (_u(*s),)) for s in [(4, 5), (1, 1), (2, 3, 4), (7,)]]
CASES += [
    Case("cross_entropy", (_u(5, 7), Arg((5,), "int", 7))),
    Case("cross_entropy", (_u(1, 1), Arg((1,), "int", 1))),
    Case("cross_entropy", (_u(2, 3, 4), Arg((2, 3), "int", 4))),   # token sequences
    Case("cross_entropy", (_u(4, 6, 5), Arg((4, 6), "scored", 5))),  # masked text (-1)
    Case("squared_error", (_u(5, 7), _u(5, 7))),
    Case("squared_error", (_u(1,), _u(1,))),
    Case("squared_error", (_u(2, 3, 4), _u(2, 3, 4))),
    Case("absolute_error", (_u(5, 7), _u(5, 7))),
    Case("absolute_error", (_u(1,), _u(1,))),
    Case("absolute_error", (_u(2, 3, 4), _u(2, 3, 4))),
    Case("logistic", (_u(6,), Arg((6,), "int", 2))),      # a score R, labels 0/1 (t = -1/+1)
    Case("logistic", (_u(1, 1), Arg((1, 1), "int", 2))),  # R^1
    Case("logistic", (_u(4, 3), Arg((4, 3), "int", 2))),
    Case("hinge", (_u(6,), Arg((6,), "int", 2))),
    Case("hinge", (_u(1, 1), Arg((1, 1), "int", 2))),
    Case("hinge", (_u(4, 3), Arg((4, 3), "int", 2))),
    Case("batch_mean", (_u(5,),)),
    Case("batch_mean", (_u(1,),)),
    Case("batch_mean", (_u(2, 3),)),
    Case("scored_mean", (_u(6,), Arg((6,), "scored", 3))),
    Case("scored_mean", (_u(2, 5), Arg((2, 5), "scored", 4))),
    Case("scored_mean", (_u(1,), Arg((1,), "int", 2))),
]
# conv2d(x, w, b): kernel sizes 1-5 (one even), strides 1-3, paddings 0-2, H != W, odd sizes.
for _x, _w, _stride, _padding in [
    ((2, 3, 5, 7), (4, 3, 3, 3), 1, 1),
    ((1, 1, 5, 5), (2, 1, 1, 1), 1, 0),
    ((2, 2, 7, 6), (3, 2, 5, 5), 2, 2),
    ((3, 2, 7, 5), (2, 2, 3, 3), 3, 0),
    ((1, 2, 4, 5), (1, 2, 4, 4), 1, 0),
    ((2, 1, 6, 7), (2, 1, 3, 3), 2, 1),
]:
    CASES.append(Case("conv2d", (_u(*_x), _u(*_w), _u(_w[0])),
                      {"stride": _stride, "padding": _padding}))
# conv2d grouped, depthwise (groups = channels) and with rectangular kernels.
for _x, _w, _stride, _padding, _groups in [
    ((2, 4, 5, 6), (6, 2, 3, 3), 1, 1, 2),
    ((2, 3, 5, 5), (3, 1, 3, 3), 2, 1, 3),
    ((1, 2, 6, 5), (4, 1, 1, 3), 1, (0, 1), 2),
    ((2, 2, 7, 4), (3, 2, 5, 2), 2, (2, 0), 1),
]:
    CASES.append(Case("conv2d", (_u(*_x), _u(*_w), _u(_w[0])),
                      {"stride": _stride, "padding": _padding, "groups": _groups}))
# conv2d with fuse.py's relu: stride 1, and strided (the phased columns).
CASES += [Case("conv2d", (_u(2, 3, 5, 7), _u(4, 3, 3, 3), _u(4)),
               {"stride": 1, "padding": 1, "relu": True}),
          Case("conv2d", (_u(2, 2, 7, 6), _u(3, 2, 5, 5), _u(3)),
               {"stride": 3, "padding": 2, "relu": True})]
# conv1d(xs, w, b) along a sequence: same padding, none, strided, a kernel of 1.
CASES += [Case("conv1d", (_u(*_x), _u(*_w), _u(_w[0])), {"stride": _s, "padding": _p})
          for _x, _w, _s, _p in [((2, 5, 3), (4, 3, 3), 1, 1), ((1, 4, 2), (3, 2, 1), 1, 0),
                                 ((2, 7, 2), (2, 2, 4), 2, 2)]]
# dropout: a training step's fixed mask (the key), and the identity of evaluation (no key).
CASES += [
    Case("dropout", (_u(4, 5),), {"p": 0.3, "site": 0, "key": (1, 2)}),
    Case("dropout", (_u(2, 3, 4),), {"p": 0.5, "site": 2, "key": (0, 7)}),
    Case("dropout", (_u(1,),), {"p": 0.1, "site": 0, "key": (3, 0)}),
    Case("dropout", (_u(4, 5),), {"p": 0.3, "site": 0, "key": None}),
]
# avgpool2d: tiling, overlapping, size 1.
CASES += [
    Case("avgpool2d", (_u(2, 3, 4, 6),), {"size": 2, "stride": 2}),
    Case("avgpool2d", (_u(2, 2, 7, 5),), {"size": 3, "stride": 2}),
    Case("avgpool2d", (_u(1, 1, 3, 3),), {"size": 1, "stride": 1}),
]
# maxpool2d: tiling, tiling with leftover rows/columns, overlapping (AlexNet's 3/2), size 1.
CASES += [
    Case("maxpool2d", (_u(2, 3, 4, 6),), {"size": 2, "stride": 2}),
    Case("maxpool2d", (_u(2, 1, 5, 7),), {"size": 3, "stride": 3}),
    Case("maxpool2d", (_u(2, 2, 7, 5),), {"size": 3, "stride": 2}),
    Case("maxpool2d", (_u(1, 2, 5, 5),), {"size": 2, "stride": 1}),
    Case("maxpool2d", (_u(1, 1, 3, 3),), {"size": 1, "stride": 1}),
]
# embed: repeated ids accumulate (15 draws of 4 ids), one id and one row, ids of rank 3.
CASES += [
    Case("embed", (Arg((3, 5), "int", 4), _u(4, 3))),
    Case("embed", (Arg((1,), "int", 1), _u(1, 1))),
    Case("embed", (Arg((2, 3, 2), "int", 5), _u(5, 2))),
]
# embed_linear(ids, E, W, b?): ids >= V rows (the product on the table), fewer (gather first).
CASES += [
    Case("embed_linear", (Arg((3, 5), "int", 4), _u(4, 3), _u(2, 3), _u(2))),
    Case("embed_linear", (Arg((2, 3), "int", 5), _u(5, 2), _u(3, 2))),
    Case("embed_linear", (Arg((1, 2), "int", 5), _u(5, 3), _u(4, 3), _u(4))),
    Case("embed_linear", (Arg((1,), "int", 1), _u(1, 1), _u(1, 1), _u(1))),
]
# rnn_scan(xp [B, n, h], U [h, h]) and lstm_scan(xp [B, n, 4h], U [4h, h]): backpropagation
# through the whole sequence; n = 1 (no recurrence), B = 1, h = 1.
for _b, _n, _h in [(2, 5, 3), (1, 1, 1), (3, 1, 4), (1, 7, 2), (4, 6, 1)]:
    CASES.append(Case("rnn_scan", (_u(_b, _n, _h), _u(_h, _h))))
for _b, _n, _h in [(2, 5, 2), (1, 1, 1), (3, 1, 3), (1, 6, 1), (2, 4, 3)]:
    CASES.append(Case("lstm_scan", (_u(_b, _n, 4 * _h), _u(4 * _h, _h))))
# layernorm over the last axis (d = 1 normalises to 0); causal_softmax over [..., n, n];
# attention(q [..., n, e], k [..., m, e], v [..., m, f]), causal only where n == m.
CASES += [Case("layernorm", (_u(*s),)) for s in [(4, 5), (1, 1), (2, 3, 4), (7,)]]
CASES += [Case("layernorm", (_u(3, 2),), {"eps": 0.1})]
CASES += [Case("layernorm", (_u(*s), _u(s[-1]), _u(s[-1]))) for s in [(4, 5), (1, 1), (2, 3, 4)]]
CASES += [Case("causal_softmax", (_u(*s),)) for s in [(4, 4), (1, 1), (2, 3, 3), (2, 1, 5, 5)]]
for _q, _k, _v, _causal in [
    ((4, 3), (4, 3), (4, 2), True),
    ((1, 1), (1, 1), (1, 1), True),
    ((1, 1), (1, 1), (1, 1), False),
    ((2, 3, 2), (2, 5, 2), (2, 5, 4), False),
    ((2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3), True),
]:
    CASES.append(Case("attention", (_u(*_q), _u(*_k), _u(*_v)),
                      {"scale": 0.7, "causal": _causal}))
# attention with heads: q [..., n, H*e], k [..., m, H*e], v [..., m, H*f] (fuse.py's fold of
# split_heads and join_heads).
for _q, _k, _v, _causal, _heads in [
    ((2, 3, 4), (2, 3, 4), (2, 3, 6), True, 2),
    ((3, 6), (5, 6), (5, 3), False, 3),
    ((2, 2, 4, 6), (2, 2, 4, 6), (2, 2, 4, 3), True, 3),
    ((1, 2), (1, 2), (1, 2), True, 2),
]:
    CASES.append(Case("attention", (_u(*_q), _u(*_k), _u(*_v)),
                      {"scale": 0.7, "causal": _causal, "heads": _heads}))
# split_heads [..., n, H*e] -> [..., H, n, e] and join_heads back (a reshape and a swap of axes).
CASES += [Case("split_heads", (_u(*s),), {"heads": h})
          for s, h in [((2, 3, 4), 2), ((1, 1), 1), ((3, 6), 3), ((2, 2, 4, 6), 3)]]
CASES += [Case("join_heads", (_u(*s),), {"heads": s[-3]})
          for s in [(2, 2, 3, 2), (1, 1, 1), (3, 4, 2), (2, 2, 3, 4, 1)]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradcheck(case: Case) -> None:
    _gradcheck(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.prim in TWO_PATH], ids=lambda c: c.id)
def test_gradcheck_numpy_path(case: Case, monkeypatch) -> None:
    force_path(monkeypatch, "numpy")
    _gradcheck(case)


def test_size_picks_the_path() -> None:
    from dp.interpreter.core.primitives import reduce
    assert reduce.use_kernel(np.zeros((32, 10))) and reduce.use_kernel(np.zeros((2048, 103)))
    assert not reduce.use_kernel(np.broadcast_to(np.float32(0), (8193, 8192)))  # > 2^26
    assert PATHS == ("kernel", "numpy")


def _gradcheck(case: Case) -> None:
    prim = get(case.prim)
    inputs = sample_inputs(prim, case.args, case.params)
    check_primitive(prim, inputs, case.params, eps=1e-6, atol=1e-5,
                    rtol=1e-5 if prim.smooth else 1e-3)


def test_oracle_catches_a_wrong_vjp() -> None:
    x = np.random.default_rng(0).uniform(-2, 2, (3, 4))
    right = lambda c, out, xs: (c * (1 - out * out),)  # noqa: E731
    wrong = lambda c, out, xs: (c * (1 - out * out) * (1 + 1e-4),)  # noqa: E731
    check_grads(np.tanh, (x,), right, rtol=1e-5)
    with pytest.raises(AssertionError):
        check_grads(np.tanh, (x,), wrong, rtol=1e-5)
    big = np.random.default_rng(1).uniform(-2, 2, (20, 20))  # random-direction mode
    with pytest.raises(AssertionError):
        check_grads(np.tanh, (big,), wrong, rtol=1e-5)


def test_unwanted_gradients_are_none() -> None:
    for case in CASES:
        prim = get(case.prim)
        inputs = sample_inputs(prim, case.args, case.params)
        out, saved = apply_forward(prim, *inputs, **case.params)
        grads = apply_backward(prim, np.ones_like(out), out, inputs, (False,) * len(inputs),
                               saved, **case.params)
        assert grads == (None,) * len(inputs), case.id


def test_linear_skips_dx_when_not_wanted() -> None:
    linear = get("linear")
    x, w = np.ones((3, 4)), np.ones((2, 4))
    out = linear.forward(x, w)
    dx, dw = linear.backward(np.ones_like(out), out, (x, w), (False, True))
    assert dx is None and dw.shape == (2, 4)


# ---------------------------------------------------------------------------------------------
# The recipe of the cases (the kinks' pinned values and the sampler: tests/test_kinks.py)

# Rated smooth, so held to rtol = 1e-5 (PyTorch's float64 rule): these at least.
SMOOTH = {"add", "mul", "matmul", "exp", "tanh", "sigmoid", "softmax", "log_softmax",
          "layernorm", "conv2d", "conv1d", "embed", "embed_linear"}
# Whose operands broadcast: each needs a case where they differ in shape.
BROADCAST = set(BINARY) | {"div", "where", "linear", "matmul"}
# lstm_scan packs its four gates on one axis of 4h: that axis may pass 7.
WIDE = {"lstm_scan"}


def test_cases_follow_the_recipe() -> None:
    """At least 3 cases per primitive, one with an axis of size 1 (fill: its output), one with
    shapes that broadcast where operands do; every axis at most 7, a matrix at most 5 x 7."""
    bad = []
    for name, prim in PRIMITIVES.items():
        cases = [c for c in CASES if c.prim == name]
        shapes = [[a.shape for a in c.args if a.kind not in ("int", "scored")] for c in cases]
        if len(cases) < 3:
            bad.append(f"{name}: {len(cases)} cases")
        ones = [s for c in cases for s in [c.params.get("shape", ())] + [a.shape for a in c.args]]
        if not any(1 in s for s in ones):
            bad.append(f"{name}: no axis of size 1")
        if name in BROADCAST and not any(len(set(s)) > 1 for s in shapes):
            bad.append(f"{name}: no broadcast case")
        for s in (s for ss in shapes for s in ss):
            if (max(s, default=0) > 7 and name not in WIDE) or (len(s) == 2 and min(s) > 5):
                bad.append(f"{name}: shape {s}")
    assert bad == []
    assert [n for n in SMOOTH if not PRIMITIVES[n].smooth] == []


def test_gradcheck_uses_the_numbers(monkeypatch) -> None:
    """eps 1e-6, atol 1e-5, rtol 1e-5 for a smooth primitive and 1e-3 for the others; seed 0."""
    seen = []
    monkeypatch.setattr(sys.modules[__name__], "check_primitive",
                        lambda prim, inputs, params, **kw: seen.append((prim.name, kw)))
    for name in ("tanh", "relu"):
        _gradcheck(next(c for c in CASES if c.prim == name))
    assert seen == [("tanh", {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-5}),
                    ("relu", {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3})]
    assert sample_inputs.__kwdefaults__["seed"] == 0
