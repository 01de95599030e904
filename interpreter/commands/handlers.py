"""The commands behind `dp check`, `dp train`, `dp run`, `dp show`, `dp repl`, `dp plot` and
`dp export` (each: args -> exit code)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dp.dsl import typed as T
from dp.dsl.blocks import SOURCES
from dp.dsl.check_blocks import override, point_data
from dp.dsl.choices import configuration_names, only_choices
from dp.dsl.errors import DpError, plural, suggest
from dp.dsl.loader import load_programs
from dp.dsl.param_counts import footprint
from dp.interpreter.training import distributed

from .structure import describe_module, is_closed, open_sizes

# What only running a model needs (the executor, training, data, checkpoints) is imported by
# the commands that run one, so that `dp check` starts faster.
if TYPE_CHECKING:
    from dp.interpreter.core.model import Model


def check(args) -> int:
    if args.dump == "ast":
        from dp.dsl.loader import read_program

        for item in read_program(args.file)[1].items:
            print(item)
        return 0
    tprog, sources = load_programs([args.file])  # its train and run blocks are checked too
    _not_empty(args.file, sources)
    mine = {str(Path(args.file).resolve())}
    shown = [d for d in tprog.defs.values()
             if str(Path(d.span.file).resolve()) in mine]
    if args.summary:
        from .summary import summary_lines

        described = [summary_lines(tprog, tdef) for tdef in shown]
    else:
        described = [describe_module(tprog, tdef) for tdef in shown]
    for tdef in shown:
        _fits_memory(tprog, tdef)
    print(f"{args.file}: ok ({len(shown)} module{'s' if len(shown) != 1 else ''})")
    for tdef, lines in zip(shown, described, strict=True):
        print()
        print("\n".join(lines))
        if args.dump == "plan" and is_closed(tdef):
            print(_plan_text(tprog, tdef))
        elif args.dump == "plan":  # a generic module has a plan only where it is used
            print(f"no plan: {tdef.name} waits for {', '.join(open_sizes(tdef))}; it is "
                  "lowered where a module uses it")
    return 0


def _fits_memory(tprog: T.TProgram, tdef: T.TDef) -> None:
    """A model whose numbers for one example come near the limit is lowered, so memory.py
    counts its buffers exactly and names the biggest (error[resource]); the front end's count
    is never below lowering's, and a small program is checked without NumPy."""
    from dp.interpreter.core import memory

    numbers = footprint(tprog, tdef.name) if is_closed(tdef) else 0
    if numbers is None or 8 * 2 * numbers > memory.max_bytes:  # int64 at most, twice over
        from dp.interpreter.core.lower import lower

        lower(tprog, tdef.name, 1, tdef.span)


def _plan_text(tprog: T.TProgram, tdef: T.TDef) -> str:
    from dp.interpreter.core.lower import lower
    from dp.interpreter.core.plan import format_plan

    return format_plan(lower(tprog, tdef.name, 1, tdef.span))


def _not_empty(file: str, sources: dict[str, str]) -> None:
    """A file of nothing but blank lines and comments is refused alike by every command
    (`dp check` would find nothing to check, `dp run` nothing to run)."""
    text = sources.get(file)  # None: a file of the standard library, read as one
    if text is not None and all(not line.strip() or line.lstrip().startswith("#")
                                for line in text.splitlines()):
        raise DpError("file", f"{file} is empty: it defines no module and has no train or run "
                      "block", None, ("a program starts with a module's signature and "
                                      "definition, such as Net: R^4 -> R^2",))


def _train_block(tprog: T.TProgram, file: str) -> T.TTrain:
    if tprog.train is None:
        raise DpError("usage", f"{file} has no train block",
                      None, ("add one: train Model on digits(split = train): ...",))
    return tprog.train


def train_cmd(args) -> int:
    with _reading(args.data):
        return _train(args)


def _train(args) -> int:
    from dp.interpreter.core.model import Model
    from dp.interpreter.training.checkpoint import program_digest
    from dp.interpreter.training.reports import run_block
    from dp.interpreter.training.train import checkpoint_path, parse_sets
    from dp.interpreter.training.train import train as train_model

    distributed.join()  # under mpiexec: the ranks agree on any error from here on
    sets = parse_sets(args.set)  # the model's configuration arguments are chosen in loading
    tprog, sources = load_programs([args.file], sets)
    _not_empty(args.file, sources)
    flags = {"epochs": args.epochs, "steps": args.steps, "seed": args.seed, "lr": args.lr}
    train = _train_block(tprog, args.file)
    chosen = configuration_names(tprog, train.model)
    settings = {k: v for k, v in sets.items() if k not in chosen}
    config = override(train, {**settings, **{k: v for k, v in flags.items() if v is not None}},
                      chosen)
    runs = tprog.runs
    if args.data:
        config, runs = _data(config, runs, args.data)
    model = Model(tprog, config.model, config.model_span)
    if args.init_from:  # training starts from these weights instead of the seed's
        if args.resume:
            raise DpError("usage", "--init-from starts a new run from weights and --resume "
                          "goes on from the checkpoint: give one of them")
        _weights([model], args.init_from)
        model.initial = {path: v.copy() for path, v in model.params.items()}
    ckpt = checkpoint_path(args.file, args.checkpoint, config)
    folder = os.path.dirname(ckpt) or "."
    if not os.path.isdir(folder):  # found now, not after the first epoch
        raise DpError("usage", f"the checkpoint {ckpt} goes into {folder}, which is not a "
                      "folder", None, ("create it, or give --checkpoint a path in one",))
    # a step's plan, its gradients and the optimizer's state within the memory limit
    model.reserve(max(1, config.batch // distributed.WORLD.size), config.loss,
                  1 + _state_copies(config.optimizer))
    summary = train_model(model, config, os.path.dirname(args.file) or ".", ckpt,
                          program_digest(tprog, sources, config.model, sets),
                          resume=args.resume, every=args.checkpoint_every)
    first = summary["first_step_seconds"]  # None when no step was left to run
    print(f"trained {plural(summary['steps'], 'step')} in {summary['seconds']:.2f} s"
          + (f" (first step {first:.2f} s)" if first is not None else "")
          + f"; final loss {summary['final_loss']:.4f}; saved {ckpt}", flush=True)
    for rb in runs if distributed.root() else ():  # rank 0 alone reports
        run_block(rb, {model.name: model}, os.path.dirname(args.file) or ".")
    return 0


def _state_copies(optimizer: T.TOptimizer) -> int:
    """Buffers of the parameters' size the optimizer keeps (optim.Optimizer.init_state)."""
    if optimizer.name == "sgd":
        return int(dict(optimizer.hyper)["momentum"] != 0)
    return 2


def run(args) -> int:
    with _reading(args.data):
        return _run(args)


def _run(args) -> int:
    from dp.interpreter.core.model import Model
    from dp.interpreter.training.reports import run_block
    from dp.interpreter.training.train import checkpoint_path, parse_sets

    sets = parse_sets(args.set)  # as the model was trained: --set cell=LSTM
    tprog, sources = load_programs([args.file], sets, settings=False)
    _not_empty(args.file, sources)
    only_choices(sets, tprog, "run")
    runs = _data(tprog.train, tprog.runs, args.data)[1] if args.data else tprog.runs
    if not tprog.runs:
        raise DpError("usage", f"{args.file} has no run block",
                      None, ("add one: run:\n       print accuracy(Model, data)",))
    clash = [f for f, given in (("--checkpoint", args.checkpoint), ("--best", args.best),
                                ("--seed", args.seed is not None)) if given]
    if args.weights and clash:
        raise DpError("usage", f"--weights gives every parameter: it cannot go with "
                      f"{clash[0]}")
    if tprog.train is not None:
        config = tprog.train
        model = Model(tprog, config.model, config.model_span)
        if args.weights:
            _weights([model], args.weights)
        else:
            ckpt = checkpoint_path(args.file, args.checkpoint, config)
            _load(model, _best(ckpt, config) if args.best else ckpt, tprog, sources, sets)
        models = {model.name: model}
    elif args.checkpoint or args.best:
        raise DpError("usage", f"{args.file} has no train block, so "
                      f"{'--checkpoint' if args.checkpoint else '--best'} has no "
                      f"model to load into", None,
                      ("give the run's modules their parameters with --weights "
                       "W.safetensors (tensors named by parameter path)",))
    else:
        models = _untrained(tprog, args.seed or 0, args.weights)
    for rb in runs:
        run_block(rb, models, os.path.dirname(args.file) or ".")
    return 0


def _best(ckpt: str, config: T.TTrain) -> str:
    """`dp run --best`: the parameters with the best held-out loss, kept beside CKPT."""
    from dp.interpreter.training.best import best_path

    best = best_path(ckpt)
    if not os.path.exists(best):
        raise DpError("usage", f"--best: there is no best checkpoint {best}", None, (
            "the train block has no eval setting, so its runs keep no best parameters"
            if config.eval is None else "`dp train` keeps it from the first evaluation on",))
    return best


@contextlib.contextmanager
def _reading(path: str | None):
    """An error in the data says where it was read from, when --data says it."""
    try:
        yield
    except DpError as err:
        if path is None or err.kind != "data":
            raise
        raise err.with_note(f"the data is read from --data {path}") from None


def _data(train: T.TTrain | None, runs, path: str):
    """`--data PATH`: the train block's data (and what reads the same) from another file."""
    if train is None:
        raise DpError("usage", "--data replaces the data of the train block, but the program "
                      "has none")
    if not os.path.isfile(path):
        raise DpError("usage", f"--data {path}: no such file")
    return point_data(train, runs, path)


def _load(model: Model, ckpt: str, tprog: T.TProgram, sources: dict[str, str],
          sets: dict[str, str]) -> None:
    """The trained parameters, of this model as the program defines it; a model with
    configuration arguments may have been trained with other choices (`dp train --set
    cell=LSTM`), which must be made again."""
    from dp.interpreter.training.checkpoint import check_program, program_digest
    from dp.interpreter.training.train import load_trained

    try:
        meta = load_trained(model, ckpt)
        tdef = tprog.defs[model.name]
        check_program(meta, program_digest(tprog, sources, model.name, sets), ckpt,
                      model.name, tdef.span, sources.get(tdef.span.file))
    except DpError as err:
        names = configuration_names(tprog, model.name)
        if err.kind != "checkpoint" or not names or not os.path.exists(ckpt):
            raise
        raise DpError(err.kind, err.message, err.span, (
            f"a model trained with --set {names[0]}=... runs with the same --set",)
            + err.notes) from None


def generate(args) -> int:
    """`dp generate FILE "prompt"`: text from the trained language model, written as the run
    block's generate report writes it."""
    from dp.interpreter.core.model import Model
    from dp.interpreter.training import generate as sampling
    from dp.interpreter.training.train import checkpoint_path, parse_sets

    sampling.check_flags(args.prompt, args.n, args.temperature, args.top_k, args.seed)
    sets = parse_sets(args.set)
    tprog, sources = load_programs([args.file], sets, settings=False)
    _not_empty(args.file, sources)
    only_choices(sets, tprog, "generate")
    config = _train_block(tprog, args.file)
    if not SOURCES[config.data.kind].tokens:
        raise DpError("value", f"dp generate writes with a model trained on text, but "
                      f"{config.model} is trained on {config.data.kind}(...)", config.data.span)
    model = Model(tprog, config.model, config.model_span)
    _load(model, checkpoint_path(args.file, args.checkpoint, config), tprog, sources, sets)
    print(sampling.generate(model, args.prompt, args.n, args.temperature, args.top_k,
                            args.seed), flush=True)
    return 0


def _untrained(tprog: T.TProgram, seed: int, weights: str | None = None) -> dict[str, Model]:
    """A program with no train block runs its modules as initialized from the seed, or
    with the given weights."""
    from dp.interpreter.core.model import Model

    models = {}
    for r in (r for b in tprog.runs for p in b.prints for r in p.items):
        if r.model is not None and r.model not in models:
            models[r.model] = Model(tprog, r.model, r.model_span)
            models[r.model].init(seed)
    if weights is not None:
        _weights(list(models.values()), weights)
    for name in models:
        print(f"{name} is not trained here: its parameters are "
              + (f"initialized with seed {seed}" if weights is None else f"read from {weights}"),
              flush=True)
    return models


def _weights(models: list[Model], path: str) -> None:
    """`--weights` and `--init-from`: a safetensors file by parameter path, strictly."""
    from dp.interpreter.training.checkpoint import load_weights, put_weights

    tensors, meta = load_weights(path)
    put_weights(models, tensors, meta, f"'{path}'")


def show(args) -> int:
    from .diagram_draw import show_cmd

    return show_cmd(args)


def repl(args) -> int:
    from .repl_terminal import repl_main

    return repl_main(args.files)


def plot(args) -> int:
    from .plot import plot_cmd

    return plot_cmd(args)


def export(args) -> int:
    """The module's inference graph as ONNX, with the trained parameters when MODULE is the
    model the train block trains and its checkpoint exists (or --checkpoint names one), else
    initialized from --seed."""
    from dp.interpreter.core.model import Model
    from dp.interpreter.export.onnx_export import export_onnx
    from dp.interpreter.training.train import checkpoint_path, parse_sets

    sets = parse_sets(args.set)  # as the model was trained: --set cell=LSTM
    tprog, sources = load_programs([args.file], sets, settings=False)
    _not_empty(args.file, sources)
    only_choices(sets, tprog, "export")
    if args.module not in tprog.defs:
        raise DpError("name", f"no module '{args.module}' is defined in {args.file} or the "
                      "standard library", None, suggest(args.module, tprog.defs))
    trained = tprog.train if tprog.train is not None and tprog.train.model == args.module \
        else None
    model = Model(tprog, args.module)
    ckpt = checkpoint_path(args.file, args.checkpoint, trained)
    if args.checkpoint or (trained is not None and os.path.exists(ckpt)):
        _load(model, ckpt, tprog, sources, sets)
        source = f"the parameters of {ckpt}"
    else:
        model.init(args.seed or 0)
        source = f"parameters initialized with seed {args.seed or 0} (not trained)"
    out = args.output or f"{args.module}.onnx"
    export_onnx(model, out)
    print(f"wrote {out}: {args.module} with {source}")
    return 0


def gradcheck(args) -> int:
    from .gradcheck_cmd import gradcheck_cmd

    return gradcheck_cmd(args)


train = train_cmd  # `dp train`
