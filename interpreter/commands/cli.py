"""The `dp` command: check, train and run programs. Wiring only; every stage lives elsewhere.

Every error is printed as docs/architecture.md (Errors) describes, with a non-zero exit code; a
Python traceback is shown only with --debug (otherwise an internal error's traceback goes to a
log).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from dp.dsl import DpError, format_error

from .internal_error import internal_error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise DpError("usage", f"{message} (see `dp --help`)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dp", description="dp: type signatures that define neural networks")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="check a program and print its modules")
    c.add_argument("file")
    c.add_argument("--dump", choices=["ast", "plan"], help="print an intermediate form")
    c.add_argument("--summary", action="store_true",
                   help="a table of each module's layers, output shapes and parameter counts")
    t = sub.add_parser("train", help="train the program's model, save it, run its run block")
    t.add_argument("file")
    t.add_argument("--checkpoint", help="where to save (default: FILE with .safetensors)")
    t.add_argument("--epochs", type=int, help="override the program's epochs")
    t.add_argument("--steps", type=int, help="stop after this many steps")
    t.add_argument("--seed", type=int, help="override the program's seed")
    t.add_argument("--lr", type=float, help="override the optimizer's learning rate")
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a setting of the train block or an argument of its "
                        "optimizer: --set lr=0.01 --set epochs=5")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint")
    t.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="save a checkpoint every STEPS steps (default: every epoch)")
    r = sub.add_parser("run", help="run the program's run block with trained parameters")
    r.add_argument("file")
    r.add_argument("--checkpoint", help="the parameters to use (default: FILE .safetensors)")
    r.add_argument("--seed", type=int, help="initialize untrained modules with this seed")
    s = sub.add_parser("show", help="draw a module as a box diagram (SVG, or PNG with -o x.png)")
    s.add_argument("module")
    s.add_argument("file", nargs="?", help="a program defining MODULE (default: the stdlib)")
    s.add_argument("-o", "--output", help="where to write (default: MODULE.svg)")
    e = sub.add_parser("repl", help="explore modules interactively")
    e.add_argument("files", nargs="*", help="programs to load after the standard library")
    g = sub.add_parser("plot", help="draw the loss curves of runs to a PNG")
    g.add_argument("runs", nargs="+", metavar="RUN",
                   help="a program, its checkpoint or its metrics file")
    g.add_argument("-o", "--output", help="where to write (default: beside the first run)")
    for q in (c, t, r, s, e, g):
        q.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        if debug:  # re-check every plan lowering and fusion build (a bug shows where it is made)
            from dp.interpreter.core import plan
            plan.CHECK_PLANS = True
        from . import handlers as commands

        return getattr(commands, args.command)(args)
    except DpError as err:
        if debug:
            traceback.print_exc()
        print(format_error(err), file=sys.stderr)
        return err.exit_code if err.kind != "usage" else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dp check ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug in dp: keep the traceback out of the user's way
        if debug:
            raise
        print(internal_error(exc), file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
