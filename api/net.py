"""`Net`: one module of a program with its parameters, as NumPy functions: outputs, a
vector-Jacobian product, a loss and its gradient, weights in and out by parameter path."""

from __future__ import annotations

import os

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import LOSSES
from dp.interpreter.core.model import Model
from dp.interpreter.training import checkpoint
from dp.interpreter.training.train import VERSION

from . import arrays
from .errors import api, reported, usage


class Net:
    """A module ready to run (made by `Program.model`). Arrays go in and come out with the
    batch axis first; token ids are integers, token outputs are scores."""

    def __init__(self, model: Model, train: T.TTrain | None, sources: dict[str, str]):
        self._model, self._sources = model, sources
        self._loss = train.loss if train is not None and train.model == model.name else None
        self._plain = arrays.plain(model)

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def signature(self) -> str:
        """The module's type, as the program declares it: `Digits: R^64 -> R^10`."""
        return f"{self.name}: {self._model.sig}"

    @property
    def dtype(self) -> np.dtype:
        return self._model.dtype

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every parameter by path (`Digits.feedforward1.W`), as views: writing into one
        changes the network."""
        return dict(self._model.params)

    def __repr__(self) -> str:
        return f"<dp.Net {self.signature}, {self._model.num_params:,} parameters, {self.dtype}>"

    @api
    def __call__(self, *xs) -> np.ndarray:
        """The outputs for a batch. A module that reads its own earlier output tokens
        (`previous`) writes them one at a time, as `dp run` does."""
        if len(xs) == 1 and arrays.fits(self._plain, xs[0]):  # nothing to convert
            return self._model.predict(xs[0])
        return self._model.predict(*arrays.inputs(self._model, xs))

    @api
    def vjp(self, *xs):
        """`(outputs, pullback)`: `pullback(cotangent)` is `(dx, dparams)`, the cotangent
        (shaped like the outputs) carried back to the inputs (an array, a tuple for several
        inputs, None for token ids) and to every parameter (a dict by path)."""
        if self._model.feedback:
            raise usage(f"{self.signature} reads its own earlier outputs (previous), so its "
                        f"outputs are decoded one token at a time and have no gradient",
                        "value_and_grad differentiates it with the true earlier tokens")
        model = self._model
        out, grads = model.vjp(*arrays.inputs(model, xs, at_least=1))

        def pullback(cotangent):
            with reported(self._sources):
                dxs, dparams = grads(arrays.cotangent(model, cotangent, out.shape))
            return (dxs[0] if len(dxs) == 1 else tuple(dxs)), dparams

        return out, pullback

    @api
    def value_and_grad(self, x, y, loss: str | None = None) -> tuple[float, dict]:
        """The batch's mean loss and its gradient for every parameter (a dict by path). The
        loss is the program's train block's when it trains this module; else name one:
        cross_entropy (class ids, -1 not scored) or squared_error. Several inputs: a tuple."""
        loss = loss or self._loss
        if loss not in LOSSES:
            raise usage(f"value_and_grad needs a loss: one of {', '.join(LOSSES)}"
                        + (f", not {loss!r}" if loss else ""))
        model = self._model
        xs = arrays.inputs(model, x if isinstance(x, tuple) else (x,), at_least=1)
        if len(xs) > 1:
            raise usage(f"{self.signature}: value_and_grad takes modules of one input; use vjp")
        value = model.loss_and_grad(loss, xs[0], arrays.targets(model, y, loss, len(xs[0])))
        return value, {path: g.copy() for path, g in model.grads.items()}

    @api
    def load_weights(self, weights: str | os.PathLike | dict, strict: bool = True) -> None:
        """Parameters by path from a safetensors file (a dp checkpoint or any other, such as
        PyTorch's) or a dict of arrays. Strict: the names and shapes must be exactly the
        parameters'; otherwise the tensors that match by name are loaded and the rest is
        left as it is (a tensor of a wrong shape is still an error)."""
        if isinstance(weights, dict):
            tensors, meta, where = {k: np.asarray(v) for k, v in weights.items()}, {}, "the dict"
        else:
            tensors, meta = checkpoint.load_weights(weights)
            where = f"'{os.fspath(weights)}'"
        checkpoint.put_weights([self._model], tensors, meta, where, strict)

    @api
    def save(self, path: str | os.PathLike) -> None:
        """The parameters as a dp checkpoint (safetensors named by parameter path, with a
        checksum), which `load_weights`, `dp run --weights` and PyTorch's safetensors read."""
        meta = {"dp_version": VERSION, "model": self.name, "signature": str(self._model.sig)}
        if self._model.vocab is not None:
            meta["vocab"] = self._model.vocab.to_json()
        checkpoint.save_checkpoint(path, self._model.params, meta)

    @api
    def export_onnx(self, path: str | os.PathLike) -> None:
        """The inference graph with the current parameters as an ONNX file (needs the
        `onnx` extra: pip install 'dp[onnx]')."""
        from dp.interpreter.export.onnx_export import export_onnx

        export_onnx(self._model, os.fspath(path))

