"""The commands behind `dp check`, `dp train`, `dp run`, `dp show`, `dp repl` and `dp plot`
(each: args -> exit code)."""

from __future__ import annotations

import os
from pathlib import Path

from dp.dsl import typed as T
from dp.dsl.errors import DpError
from dp.dsl.loader import load_programs
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import format_plan
from dp.interpreter.training.reports import check_block, run_block
from dp.interpreter.training.train import (
    checkpoint_path,
    load_trained,
    parse_sets,
    program_hash,
    train_config,
)
from dp.interpreter.training.train import train as train_model

from .structure import describe_module


def check(args) -> int:
    if args.dump == "ast":
        from dp.dsl.loader import read_program

        for item in read_program(args.file)[1].items:
            print(item)
        return 0
    tprog, _ = load_programs([args.file])
    mine = {str(Path(args.file).resolve())}
    shown = [d for d in tprog.defs.values()
             if str(Path(d.span.file).resolve()) in mine]
    for block in (b for b in tprog.trains if b.span.file == args.file):
        train_config(block)  # settings are checked too, before anything runs
    if args.summary:
        from .summary import summary_lines

        described = [summary_lines(tprog, tdef) for tdef in shown]
    else:  # lowering checks sizes too
        described = [describe_module(tprog, tdef) for tdef in shown]
    print(f"{args.file}: ok ({len(shown)} module{'s' if len(shown) != 1 else ''})")
    for tdef, lines in zip(shown, described, strict=True):
        print()
        print("\n".join(lines))
        if args.dump == "plan":
            print(format_plan(lower(tprog, tdef.name, 1, tdef.span)))
    return 0


def _train_block(tprog: T.TProgram, file: str):
    blocks = [b for b in tprog.trains if b.span.file == file]
    if not blocks:
        raise DpError("usage", f"{file} has no train block",
                      None, ("add one: train Model on digits(split = train): ...",))
    return blocks[0]


def _loss_of(block) -> str:
    return next((s.value.name for s in block.settings if s.name == "loss"), "cross_entropy")


def train_cmd(args) -> int:
    tprog, sources = load_programs([args.file])
    block = _train_block(tprog, args.file)
    flags = {"epochs": args.epochs, "steps": args.steps, "seed": args.seed, "lr": args.lr}
    config = train_config(block, {**parse_sets(args.set),
                                  **{k: v for k, v in flags.items() if v is not None}})
    model = Model(tprog, block.model.name, block.model.span)
    ckpt = checkpoint_path(args.file, args.checkpoint, config)
    for rb in (b for b in tprog.runs if b.span.file == args.file):
        check_block(rb, {model.name: model})
    summary = train_model(model, block, config, os.path.dirname(args.file) or ".", ckpt,
                          program_hash(sources[args.file]), resume=args.resume,
                          every=args.checkpoint_every)
    print(f"trained {summary['steps']} steps in {summary['seconds']:.2f} s; final loss "
          f"{summary['final_loss']:.4f}; saved {ckpt}", flush=True)
    for rb in (b for b in tprog.runs if b.span.file == args.file):
        run_block(rb, {model.name: model}, config.loss, os.path.dirname(args.file) or ".",
                  sources)
    return 0


def run(args) -> int:
    tprog, sources = load_programs([args.file])
    blocks = [b for b in tprog.runs if b.span.file == args.file]
    if not blocks:
        raise DpError("usage", f"{args.file} has no run block",
                      None, ("add one: run:\n       print accuracy(Model, data)",))
    trains = [b for b in tprog.trains if b.span.file == args.file]
    if trains:
        block = trains[0]
        model = Model(tprog, block.model.name, block.model.span)
        load_trained(model, checkpoint_path(args.file, args.checkpoint, train_config(block)))
        models, loss = {model.name: model}, _loss_of(block)
    else:
        models, loss = _untrained(tprog, blocks, args.seed or 0), "cross_entropy"
    for rb in blocks:
        run_block(rb, models, loss, os.path.dirname(args.file) or ".", sources)
    return 0


def _untrained(tprog: T.TProgram, blocks, seed: int) -> dict[str, Model]:
    """A program with no train block runs its modules as initialized from the seed."""
    models = {}
    for e in (a for b in blocks for p in b.prints for c in p.exprs
              for a in getattr(c, "args", ())[:1]):
        if getattr(e, "name", None) in tprog.defs and e.name not in models:
            models[e.name] = Model(tprog, e.name, e.span)
            models[e.name].init(seed)
            print(f"{e.name} is not trained here: its parameters are initialized with seed "
                  f"{seed}", flush=True)
    return models


def show(args) -> int:
    from .diagram import show_cmd

    return show_cmd(args)


def repl(args) -> int:
    from .repl import repl_main

    return repl_main(args.files)


def plot(args) -> int:
    from .plot import plot_cmd

    return plot_cmd(args)


train = train_cmd  # `dp train`
