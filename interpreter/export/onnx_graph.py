"""A small builder of ONNX graphs: fresh names, deduplicated constants, nodes, and the shape
tensors that carry the symbolic batch dimension.

Names made here start with "/" (no dp input name or parameter path can), so they never meet
the graph's inputs (the module's argument names) or its initializers (parameter paths); a
subgraph (a Scan's step) has a prefix of its own, as ONNX wants every name once.
"""

from __future__ import annotations

import numpy as np

BATCH = None  # a dimension of a shape that is the batch size (symbolic in the graph)


class GraphBuilder:
    def __init__(self, onnx, first_input: str, prefix: str = "/"):
        self.onnx, self.helper, self.numpy_helper = onnx, onnx.helper, onnx.numpy_helper
        self.first_input = first_input  # its first axis is the batch
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._consts: dict = {}
        self._count = 0
        self._batch: str | None = None

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        """One node; its output name (a list of them when n_out > 1)."""
        outs = [self.fresh(op) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def initializer(self, name: str, array: np.ndarray) -> None:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))

    def const(self, array) -> str:
        """A constant initializer (one per distinct value)."""
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = name = self.fresh("const")
            self.initializer(name, array)
        return self._consts[key]

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, np.float32))

    def ints(self, values) -> str:
        return self.const(np.array(list(values), np.int64))

    def subgraph(self) -> GraphBuilder:
        """A builder for a subgraph, whose names are its own."""
        return GraphBuilder(self.onnx, self.first_input, self.fresh("step") + "/")

    def batch(self) -> str:
        """[B]: the batch size, read from the first input's shape (made once)."""
        if self._batch is None:
            self._batch = self.node("Shape", [self.first_input], start=0, end=1)
        return self._batch

    def shape(self, dims: tuple) -> str:
        """A shape tensor for `dims`, where BATCH stands for the batch size."""
        if BATCH not in dims:
            return self.ints(dims)
        parts = [self.batch() if d is BATCH else self.ints([d]) for d in dims]
        return self.node("Concat", parts, axis=0)
