"""A model's forward computation as an ONNX inference graph (`dp export`, `net.export_onnx`).

The graph is the module's plan (after fusion), one primitive at a time (onnx_ops.py), with the
parameters as initializers named by their paths (`Digits.feedforward1.W`). A plan is lowered
for one batch size; lowering it for two and comparing says which sizes in its parameters are
the batch (a `map` folds it into the first axis of a reshape, a scan's zero state has it), so
the graph's batch dimension is symbolic and any batch size runs. A module that reads
`previous` gets it as one more input: its own output tokens one position later, which a
caller feeds back to decode, as `Model.predict` does.

`onnx` is imported only here, when a model is exported: dp runs without it.
"""

from __future__ import annotations

import os

import numpy as np
from dp.dsl.errors import DpError
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import Plan, Var

from .onnx_graph import BATCH, GraphBuilder
from .onnx_ops import OPSET, RULES

BATCHES = (2, 3)  # lowered for both: the sizes that differ are the batch

# Parameters of more bytes than this go to a file of their own beside the graph, PATH.data:
# one protobuf file cannot hold 2 GB.
EXTERNAL_DATA_BYTES = 1 << 30


def export_onnx(model: Model, path: str) -> None:
    """Write `model`'s inference graph, with its current parameters, to `path`."""
    onnx = _import_onnx()
    plans = [lower(model.tprog, model.name, b, model.span) for b in BATCHES]
    proto = onnx_model(onnx, model, *plans)
    external = 4 * sum(v.size for v in model.params.values()) > EXTERNAL_DATA_BYTES
    if not external:
        onnx.checker.check_model(proto)
    try:
        onnx.save(proto, path, save_as_external_data=external, all_tensors_to_one_file=True,
                  location=os.path.basename(path) + ".data")
    except OSError as exc:
        raise DpError("file", f"cannot write {path}: {exc.strerror or exc}") from None
    if external:  # checked from the file: the checker reads the data beside it
        onnx.checker.check_model(path)


def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise DpError("export", "exporting to ONNX needs the onnx package, which is not "
                      "installed", None, ("install it with: pip install 'dp[onnx]'",)) from None
    return onnx


def onnx_model(onnx, model: Model, plan: Plan, other: Plan):
    """The ModelProto of `plan`; `other` is the same module lowered for another batch size."""
    helper = onnx.helper
    names = _input_names(model, plan)
    g = GraphBuilder(onnx, names[0])
    values: dict[int, str] = {v.id: n for v, n in zip(plan.inputs, names, strict=True)}
    for path, v in plan.params.items():
        values[v.id] = path
        g.initializer(path, np.asarray(model.params[path], np.float32))
    if len(other.eqns) != len(plan.eqns):
        raise RuntimeError("lowering gave plans of different lengths for two batch sizes")
    for e, e2 in zip(plan.eqns, other.eqns, strict=True):
        rule = RULES.get(e.prim)
        if rule is None:
            raise DpError("export", f"{e.prim} cannot be exported to ONNX", e.span,
                          ("docs/export.md lists what exports",))
        ins = [values[a.id] if isinstance(a, Var) else g.scalar(a.value) for a in e.inputs]
        values[e.out.id] = rule(g, e, ins, _params(e, e2))
    inputs = [_info(helper, onnx, n, v) for v, n in zip(plan.inputs, names, strict=True)]
    outputs = []
    for i, v in enumerate(plan.outputs):
        name = _output_name(names, i)
        g.nodes.append(helper.make_node("Identity", [values[v.id]], [name]))
        outputs.append(_info(helper, onnx, name, v))
    graph = helper.make_graph(g.nodes, model.name, inputs, outputs, g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dp")
    proto.ir_version = 8  # what opset 17 needs, and what runtimes since 2021 read
    if model.vocab is not None:  # a model of text: the characters its token ids stand for
        helper.set_model_props(proto, {"dp.vocab": model.vocab.to_json()})
    return proto


def _params(e, e2) -> dict:
    """e's parameters, with BATCH in a `shape` where the two lowerings differ."""
    p, p2 = dict(e.params), dict(e2.params)
    if e.prim != e2.prim or p.keys() != p2.keys() or any(
            p[k] != p2[k] for k in p if k != "shape"):
        raise RuntimeError(f"lowering gave {e.prim} and {e2.prim} at one place of two plans")
    if "shape" in p and p["shape"] != p2["shape"]:
        p["shape"] = _symbolic(e.prim, tuple(p["shape"]), tuple(p2["shape"]))
    return p


def _symbolic(prim: str, a: tuple, b: tuple) -> tuple:
    """A shape with BATCH in the one place where it grows with the batch size: the batch of
    examples, or, in a reshape, of examples times positions (`map`)."""
    varying = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    i = varying[0]
    per_example = a[i] // BATCHES[0]
    if (len(varying) != 1 or a[i] != per_example * BATCHES[0]
            or b[i] != per_example * BATCHES[1] or (prim != "reshape" and per_example != 1)):
        raise RuntimeError(f"{prim}: the shapes {a} and {b} for batches {BATCHES} do not "
                           "say where the batch is")
    return a[:i] + (BATCH,) + a[i + 1:]


def _input_names(model: Model, plan: Plan) -> list[str]:
    """The module's argument names (`x`, `ts`), then `previous` when it reads it."""
    tdef = model.tprog.defs.get(model.name)
    args = list(tdef.inputs) if tdef is not None else []
    n_args = len(plan.inputs) - (plan.previous is not None)
    if len(args) != n_args:
        args = [f"x{i}" for i in range(n_args)]
    return args + (["previous"] if plan.previous is not None else [])


def _output_name(inputs: list[str], i: int) -> str:
    name = "output" if i == 0 else f"output{i}"
    while name in inputs:
        name += "_"
    return name


def _info(helper, onnx, name: str, v: Var):
    dtype = onnx.TensorProto.INT64 if v.dtype == "int64" else onnx.TensorProto.FLOAT
    dims = (["batch"] + list(v.shape[1:])) if v.batched else list(v.shape)
    return helper.make_tensor_value_info(name, dtype, dims)
