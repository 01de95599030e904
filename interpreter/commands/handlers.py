"""The commands behind `dp check`, `dp train`, `dp run`, `dp show`, `dp repl` and `dp plot`
(each: args -> exit code)."""

from __future__ import annotations

import os
from pathlib import Path

from dp.dsl import typed as T
from dp.dsl.check_blocks import override
from dp.dsl.errors import DpError
from dp.dsl.loader import load_programs
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import format_plan
from dp.interpreter.training.reports import run_block
from dp.interpreter.training.train import checkpoint_path, load_trained, parse_sets, program_hash
from dp.interpreter.training.train import train as train_model

from .structure import describe_module, is_closed, open_sizes


def check(args) -> int:
    if args.dump == "ast":
        from dp.dsl.loader import read_program

        for item in read_program(args.file)[1].items:
            print(item)
        return 0
    tprog, _ = load_programs([args.file])  # its train and run blocks are checked too
    mine = {str(Path(args.file).resolve())}
    shown = [d for d in tprog.defs.values()
             if str(Path(d.span.file).resolve()) in mine]
    if args.summary:
        from .summary import summary_lines

        described = [summary_lines(tprog, tdef) for tdef in shown]
    else:  # lowering checks sizes too
        described = [describe_module(tprog, tdef) for tdef in shown]
    print(f"{args.file}: ok ({len(shown)} module{'s' if len(shown) != 1 else ''})")
    for tdef, lines in zip(shown, described, strict=True):
        print()
        print("\n".join(lines))
        if args.dump == "plan" and is_closed(tdef):
            print(format_plan(lower(tprog, tdef.name, 1, tdef.span)))
        elif args.dump == "plan":  # a generic module has a plan only where it is used
            print(f"no plan: {tdef.name} waits for {', '.join(open_sizes(tdef))}; it is "
                  "lowered where a module uses it")
    return 0


def _train_block(tprog: T.TProgram, file: str) -> T.TTrain:
    if tprog.train is None:
        raise DpError("usage", f"{file} has no train block",
                      None, ("add one: train Model on digits(split = train): ...",))
    return tprog.train


def train_cmd(args) -> int:
    tprog, sources = load_programs([args.file])
    flags = {"epochs": args.epochs, "steps": args.steps, "seed": args.seed, "lr": args.lr}
    config = override(_train_block(tprog, args.file),
                      {**parse_sets(args.set), **{k: v for k, v in flags.items()
                                                  if v is not None}})
    model = Model(tprog, config.model, config.model_span)
    ckpt = checkpoint_path(args.file, args.checkpoint, config)
    summary = train_model(model, config, os.path.dirname(args.file) or ".", ckpt,
                          program_hash(sources[args.file]), resume=args.resume,
                          every=args.checkpoint_every)
    print(f"trained {summary['steps']} steps in {summary['seconds']:.2f} s; final loss "
          f"{summary['final_loss']:.4f}; saved {ckpt}", flush=True)
    for rb in tprog.runs:
        run_block(rb, {model.name: model}, os.path.dirname(args.file) or ".")
    return 0


def run(args) -> int:
    tprog, _ = load_programs([args.file])
    if not tprog.runs:
        raise DpError("usage", f"{args.file} has no run block",
                      None, ("add one: run:\n       print accuracy(Model, data)",))
    if tprog.train is not None:
        config = tprog.train
        model = Model(tprog, config.model, config.model_span)
        load_trained(model, checkpoint_path(args.file, args.checkpoint, config))
        models = {model.name: model}
    else:
        models = _untrained(tprog, args.seed or 0)
    for rb in tprog.runs:
        run_block(rb, models, os.path.dirname(args.file) or ".")
    return 0


def _untrained(tprog: T.TProgram, seed: int) -> dict[str, Model]:
    """A program with no train block runs its modules as initialized from the seed."""
    models = {}
    for r in (r for b in tprog.runs for p in b.prints for r in p.items):
        if r.model is not None and r.model not in models:
            models[r.model] = Model(tprog, r.model, r.model_span)
            models[r.model].init(seed)
            print(f"{r.model} is not trained here: its parameters are initialized with seed "
                  f"{seed}", flush=True)
    return models


def show(args) -> int:
    from .diagram_draw import show_cmd

    return show_cmd(args)


def repl(args) -> int:
    from .repl_terminal import repl_main

    return repl_main(args.files)


def plot(args) -> int:
    from .plot import plot_cmd

    return plot_cmd(args)


train = train_cmd  # `dp train`
