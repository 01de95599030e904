"""`Program`: a checked dp program (the standard library included) from which networks are
made and trained, over the same loader, `Model` and training loop as the `dp` command."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from dp.dsl import typed as T
from dp.dsl.check_blocks import override
from dp.dsl.errors import DpError, suggest
from dp.dsl.loader import load_programs, load_text
from dp.interpreter.core.model import Model
from dp.interpreter.training.checkpoint import program_digest
from dp.interpreter.training.train import checkpoint_path
from dp.interpreter.training.train import train as train_model

from .errors import Error, api, reported, usage
from .net import Net

DTYPES = ("float32", "float64")


def load(path: str | os.PathLike) -> Program:
    """Parse and check the program in a file, with the standard library."""
    path = os.fspath(path)
    with reported():
        tprog, sources = load_programs([path])
    return Program(tprog, sources, path, in_file=True)


def loads(source: str, file: str = "<string>") -> Program:
    """Parse and check a program given as text (`file` names it in messages)."""
    sources = {file: source}
    with reported(sources):
        tprog = load_text(source, file)
    return Program(tprog, sources, file, in_file=False)


class Program:
    """A checked program: its modules, its train block, networks made of its modules."""

    def __init__(self, tprog: T.TProgram, sources: dict[str, str], file: str, in_file: bool):
        self._tprog, self._sources, self.file, self._in_file = tprog, sources, file, in_file

    @property
    def modules(self) -> list[str]:
        """The modules the program defines (the standard library's are usable too)."""
        mine = (str(Path(self.file).resolve()), self.file)
        return [d.name for d in self._tprog.defs.values()
                if d.span.file == self.file or str(Path(d.span.file).resolve()) in mine]

    def __repr__(self) -> str:
        return f"<dp.Program {self.file}: {', '.join(self.modules) or 'no modules'}>"

    @api
    def model(self, name: str | None = None, *, seed: int = 0,
              weights: str | os.PathLike | dict | None = None, dtype: str = "float32") -> Net:
        """A network of module `name` (default: the one the train block trains, or the
        program's only module), its parameters drawn from `seed` or loaded from `weights`
        (a dp checkpoint, any safetensors file named by parameter path, or a dict).
        dtype float64 is for checking gradients against finite differences."""
        model = self._model(name, dtype)
        model.init(seed)
        net = Net(model, self._tprog.train, self._sources)
        if weights is not None:
            net.load_weights(weights)
        return net

    @api
    def train(self, checkpoint: str | os.PathLike | None = None, *, resume: bool = False,
              init_from: str | os.PathLike | None = None, **settings) -> Net:
        """Train as the program's train block says, as `dp train` does (progress on
        stdout, a checkpoint and its metrics file written); returns the trained network.
        `settings` override the block's (`epochs=2`, `lr=0.01`, any optimizer argument);
        `init_from` starts from weights instead of the seed."""
        tprog = self._tprog
        if tprog.train is None:
            raise usage(f"{self.file} has no train block")
        config = override(tprog.train, {k: str(v) for k, v in settings.items()})
        if checkpoint is None and not self._in_file:
            raise usage("a program given as text needs checkpoint=PATH to save to")
        if resume and init_from is not None:
            raise usage("resume goes on from the checkpoint; init_from starts a new run: "
                        "give one of them")
        model = Model(tprog, config.model, config.model_span)
        net = Net(model, tprog.train, self._sources)
        if init_from is not None:
            net.load_weights(init_from)
            model.initial = {path: v.copy() for path, v in model.params.items()}
        ckpt = checkpoint_path(self.file, os.fspath(checkpoint) if checkpoint else None, config)
        train_model(model, config, os.path.dirname(self.file) or ".", ckpt,
                    program_digest(tprog, self._sources, config.model), resume=resume)
        return net

    def _model(self, name: str | None, dtype: str = "float32") -> Model:
        tprog = self._tprog
        if name is None:
            if tprog.train is not None:
                name = tprog.train.model
            elif len(self.modules) == 1:
                name = self.modules[0]
            else:
                raise usage(f"{self.file} defines {len(self.modules)} modules and trains none: "
                            f"name one", f"modules: {', '.join(self.modules)}")
        if name not in tprog.signatures:
            raise Error(DpError("name", f"no module named '{name}' in {self.file} or the "
                                        f"standard library", None,
                                suggest(name, tprog.signatures)))
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is None or dt.name not in DTYPES:
            raise usage(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        return Model(tprog, name, None, dt)

