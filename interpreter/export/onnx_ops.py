"""Each primitive of a forward plan as ONNX nodes (opset 17), computing what its forward in
interpreter/core/primitives/ computes.

A rule takes the graph builder, the equation (its shapes are those of one concrete batch: a
rule reads only ranks and the axes after the batch), the names of its inputs and its static
parameters, in which a `shape` has BATCH where the batch size goes. It returns the name of the
output. The primitives in NOT_EXPORTED have no rule: they never reach a forward plan.
"""

from __future__ import annotations

import numpy as np
from dp.interpreter.core.primitives.elementwise import GELU_A, GELU_C

from .onnx_graph import BATCH, GraphBuilder

OPSET = 17

UNARY = {"neg": "Neg", "identity": "Identity", "relu": "Relu", "tanh": "Tanh",
         "sigmoid": "Sigmoid", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs"}
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "maximum": "Max",
          "minimum": "Min"}
# never in a forward plan: what a loss adds after the model's output, and logsumexp, which
# no builtin lowers to
NOT_EXPORTED = ("cross_entropy", "scored_mean", "squared_error", "absolute_error", "logistic",
                "hinge", "batch_mean", "logsumexp")


def _square(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Mul", [ins[0], ins[0]])


def _gelu(g: GraphBuilder, e, ins, p) -> str:
    """0.5 x (1 + tanh(c (x + a x^3))), the tanh form dp computes (ONNX's Gelu is opset 20)."""
    x = ins[0]
    cube = g.node("Mul", [g.node("Mul", [x, x]), x])
    inner = g.node("Add", [x, g.node("Mul", [cube, g.scalar(GELU_A)])])
    t = g.node("Tanh", [g.node("Mul", [inner, g.scalar(GELU_C)])])
    half_x = g.node("Mul", [x, g.scalar(0.5)])
    return g.node("Mul", [half_x, g.node("Add", [t, g.scalar(1.0)])])


def _softplus(g: GraphBuilder, e, ins, p) -> str:
    """max(x, 0) + log(1 + exp(-|x|)), which never overflows (ONNX's Softplus may)."""
    x = ins[0]
    tail = g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])
    log1p = g.node("Log", [g.node("Add", [tail, g.scalar(1.0)])])
    return g.node("Add", [g.node("Relu", [x]), log1p])


COMPARE = {">": "Greater", "<": "Less", ">=": "GreaterOrEqual", "<=": "LessOrEqual"}


def _where(g: GraphBuilder, e, ins, p) -> str:
    """Where(x op y, a, b); inference needs no safe inputs (they only keep gradients finite)."""
    return g.node("Where", [g.node(COMPARE[p["op"]], ins[:2])] + list(ins[2:]))


def _transposed(g: GraphBuilder, w: str) -> str:
    return g.node("Transpose", [w], perm=[1, 0])


def _linear(g: GraphBuilder, e, ins, p) -> str:
    """x @ W^T (+ b) (then relu): one Gemm for a matrix of rows, else a MatMul."""
    x, w = ins[:2]
    if len(e.inputs[0].shape) == 2:
        out = g.node("Gemm", ins, transB=1)
    else:
        out = g.node("MatMul", [x, _transposed(g, w)])
        if len(ins) == 3:
            out = g.node("Add", [out, ins[2]])
    return g.node("Relu", [out]) if p.get("relu") else out


def _matmul(g: GraphBuilder, e, ins, p) -> str:
    return g.node("MatMul", ins)  # np.matmul's semantics, 1-D operands and broadcasting too


def _transpose(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Transpose", ins, perm=list(p["axes"]))


def _reshape(g: GraphBuilder, e, ins, p) -> str:
    """The target with -1 where the batch size enters (`map` folds it into the first axis)."""
    target = [-1 if d is BATCH else d for d in p["shape"]]
    return g.node("Reshape", [ins[0], g.ints(target)])


def _take(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Gather", [ins[0], g.const(np.array(p["index"], np.int64))], axis=p["axis"])


def _fill(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Expand", [ins[0], g.shape(p["shape"])])


def _stack(g: GraphBuilder, e, ins, p) -> str:
    axis = g.ints([p["axis"]])
    return g.node("Concat", [g.node("Unsqueeze", [x, axis]) for x in ins], axis=p["axis"])


def _concat(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Concat", ins, axis=p["axis"])


def _reduce(op: str):
    def rule(g: GraphBuilder, e, ins, p) -> str:
        keep = int(bool(p.get("keepdims", False)))
        if op == "ReduceSum":  # axes are an input from opset 13, an attribute for the others
            return g.node(op, [ins[0], g.ints(p["axes"])], keepdims=keep)
        return g.node(op, ins, axes=list(p["axes"]), keepdims=keep)
    return rule


def _last_axis(op: str):
    def rule(g: GraphBuilder, e, ins, p) -> str:
        return g.node(op, ins, axis=-1)
    return rule


def _layernorm(g: GraphBuilder, e, ins, p) -> str:
    """LayerNormalization over the last axis; `normalize` alone has gain 1 and no bias."""
    x = ins[0]
    eps = float(p.get("eps", 1e-5))
    if len(ins) == 3:
        return g.node("LayerNormalization", ins, axis=-1, epsilon=eps)
    ones = g.const(np.ones(e.inputs[0].shape[-1], np.float32))
    return g.node("LayerNormalization", [x, ones], axis=-1, epsilon=eps)


def _masked_softmax(g: GraphBuilder, scores: str, n: int, causal: bool) -> str:
    """Softmax over the last axis; causal: position j > i gets weight 0."""
    if causal:
        mask = g.const(np.tril(np.ones((n, n), bool)))
        scores = g.node("Where", [mask, scores, g.scalar(-np.inf)])
    return g.node("Softmax", [scores], axis=-1)


def _causal_softmax(g: GraphBuilder, e, ins, p) -> str:
    return _masked_softmax(g, ins[0], e.inputs[0].shape[-1], True)


def _split(g: GraphBuilder, x: str, rank: int, heads: int, width: int) -> str:
    """[..., n, H*e] -> [..., H, n, e] (rank is x's); the leading axes are copied (0)."""
    parts = g.node("Reshape", [x, g.ints([0] * (rank - 1) + [heads, width // heads])])
    perm = list(range(rank - 2)) + [rank - 1, rank - 2, rank]
    return g.node("Transpose", [parts], perm=perm)


def _join(g: GraphBuilder, x: str, rank: int, heads: int, width: int) -> str:
    """[..., H, n, e] -> [..., n, H*e] (rank is x's, width is e)."""
    perm = list(range(rank - 3)) + [rank - 2, rank - 3, rank - 1]
    moved = g.node("Transpose", [x], perm=perm)
    return g.node("Reshape", [moved, g.ints([0] * (rank - 2) + [heads * width])])


def _split_heads(g: GraphBuilder, e, ins, p) -> str:
    x = e.inputs[0]
    return _split(g, ins[0], len(x.shape), p["heads"], x.shape[-1])


def _join_heads(g: GraphBuilder, e, ins, p) -> str:
    x = e.inputs[0]
    return _join(g, ins[0], len(x.shape), p["heads"], x.shape[-1])


def _attention(g: GraphBuilder, e, ins, p) -> str:
    """softmax(causal?(q k^T scale)) v in each head: matrix products and a masked softmax."""
    q, k, v = e.inputs
    heads = p.get("heads", 1)
    qn, kn, vn = ins
    if heads > 1:
        qn, kn, vn = (_split(g, name, len(a.shape), heads, a.shape[-1])
                      for name, a in zip(ins, e.inputs, strict=True))
    rank = len(q.shape) + (heads > 1)
    kt = g.node("Transpose", [kn], perm=list(range(rank - 2)) + [rank - 1, rank - 2])
    scores = g.node("Mul", [g.node("MatMul", [qn, kt]), g.scalar(p["scale"])])
    out = g.node("MatMul", [_masked_softmax(g, scores, q.shape[-2], p["causal"]), vn])
    return _join(g, out, rank, heads, v.shape[-1] // heads) if heads > 1 else out


def _pads(padding) -> tuple[int, int]:
    """(height, width) padding from one number or a pair."""
    return tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)


def _conv2d(g: GraphBuilder, e, ins, p) -> str:
    """Conv with the filter's own (possibly rectangular) kernel, stride, padding and groups."""
    ph, pw = _pads(p["padding"])
    s = p["stride"]
    out = g.node("Conv", ins, kernel_shape=list(e.inputs[1].shape[2:]), strides=[s, s],
                 pads=[ph, pw, ph, pw], group=p.get("groups", 1))
    return g.node("Relu", [out]) if p.get("relu") else out  # fused by fuse.py


def _conv1d(g: GraphBuilder, e, ins, p) -> str:
    """Along a sequence [B, N, D]: its vectors become channels [B, D, N] for a 1-D Conv (the
    filters [E, D, K] are already in ONNX's layout), and back to [B, No, E]."""
    x, w, b = ins
    pad, s = p["padding"], p["stride"]
    channels = g.node("Transpose", [x], perm=[0, 2, 1])
    out = g.node("Conv", [channels, w, b], kernel_shape=[e.inputs[1].shape[2]], strides=[s],
                 pads=[pad, pad])
    return g.node("Transpose", [out], perm=[0, 2, 1])


def _pool(op: str):
    def rule(g: GraphBuilder, e, ins, p) -> str:
        size, s = p["size"], p["stride"]
        return g.node(op, ins, kernel_shape=[size, size], strides=[s, s])  # no padding
    return rule


def _embed(g: GraphBuilder, e, ins, p) -> str:
    return g.node("Gather", [ins[1], ins[0]], axis=0)


def _embed_linear(g: GraphBuilder, e, ins, p) -> str:
    """The rows of the table's projection E @ W^T (+ b), one Gemm, gathered by the ids."""
    return g.node("Gather", [g.node("Gemm", ins[1:], transB=1), ins[0]], axis=0)


def _scan(g: GraphBuilder, e, xp: str, u: str, lstm: bool) -> str:
    """A recurrence from a zero state as one Scan over the sequence, its step a subgraph that
    reads U^T from the graph around it. ONNX runtimes agree on scanning the first axis, so
    the sequence goes there and back: [B, n, k] -> [n, B, k]."""
    h = e.out.shape[-1]
    zero = g.node("ConstantOfShape", [g.shape((BATCH, h))],
                  value=g.numpy_helper.from_array(np.zeros(1, np.float32)))
    ut = _transposed(g, u)
    body = g.subgraph()
    h_in, c_in, x_in = (body.fresh(n) for n in ("h", "c", "x"))
    pre = body.node("Add", [body.node("MatMul", [h_in, ut]), x_in])
    if lstm:  # gates i, f, g, o (PyTorch's order), as kernels/sequence.py's lstm_cell
        i, f, cand, o = body.node("Split", [pre], n_out=4, axis=1)
        i, f, o = (body.node("Sigmoid", [a]) for a in (i, f, o))
        c = body.node("Add", [body.node("Mul", [f, c_in]),
                              body.node("Mul", [i, body.node("Tanh", [cand])])])
        h_new = body.node("Mul", [o, body.node("Tanh", [c])])
        states, new_states = [h_in, c_in], [h_new, c]
    else:
        h_new = body.node("Tanh", [pre])
        states, new_states = [h_in], [h_new]
    seen = body.node("Identity", [h_new])  # the scan's output: every step's h
    info = g.helper.make_tensor_value_info
    floats = g.onnx.TensorProto.FLOAT
    step = g.helper.make_graph(body.nodes, body.prefix.strip("/"),
                               [info(n, floats, None) for n in states + [x_in]],
                               [info(n, floats, None) for n in new_states + [seen]])
    steps = g.node("Transpose", [xp], perm=[1, 0, 2])
    results = g.node("Scan", [zero] * len(states) + [steps], n_out=len(states) + 1, body=step,
                     num_scan_inputs=1)
    return g.node("Transpose", [results[-1]], perm=[1, 0, 2])


def _rnn_scan(g: GraphBuilder, e, ins, p) -> str:
    return _scan(g, e, ins[0], ins[1], lstm=False)


def _lstm_scan(g: GraphBuilder, e, ins, p) -> str:
    return _scan(g, e, ins[0], ins[1], lstm=True)


RULES = {
    **{prim: (lambda op: lambda g, e, ins, p: g.node(op, ins))(op) for prim, op in UNARY.items()},
    **{prim: (lambda op: lambda g, e, ins, p: g.node(op, ins))(op)
       for prim, op in BINARY.items()},
    "square": _square, "gelu": _gelu, "softplus": _softplus, "where": _where,
    "dropout": lambda g, e, ins, p: g.node("Identity", ins),  # what it is in inference
    "linear": _linear, "matmul": _matmul, "transpose": _transpose, "reshape": _reshape,
    "take": _take, "fill": _fill, "stack": _stack, "concat": _concat,
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"), "max": _reduce("ReduceMax"),
    "softmax": _last_axis("Softmax"), "log_softmax": _last_axis("LogSoftmax"),
    "layernorm": _layernorm, "causal_softmax": _causal_softmax,
    "split_heads": _split_heads, "join_heads": _join_heads, "attention": _attention,
    "conv2d": _conv2d, "conv1d": _conv1d, "maxpool2d": _pool("MaxPool"),
    "avgpool2d": _pool("AveragePool"), "embed": _embed, "embed_linear": _embed_linear,
    "rnn_scan": _rnn_scan, "lstm_scan": _lstm_scan,
}
