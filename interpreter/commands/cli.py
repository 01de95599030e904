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
from dp.interpreter.training import distributed

from .colour import colour_error, wants_colour
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
                        "optimizer, or choose a configuration argument of the model: "
                        "--set lr=0.01 --set epochs=5 --set cell=LSTM")
    t.add_argument("--data", metavar="PATH",
                   help="read the train block's data from PATH, a file in the format of the "
                        "source it replaces (text, csv, npz)")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint")
    t.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="save a checkpoint every STEPS steps (default: every epoch)")
    t.add_argument("--workers", type=int, metavar="N",
                   help="train over N processes on this machine (starts mpiexec; needs the "
                        "mpi extra: pip install 'dp[mpi]')")
    t.add_argument("--init-from", metavar="WEIGHTS",
                   help="start from these weights (safetensors named by parameter path) "
                        "instead of the seed")
    r = sub.add_parser("run", help="run the program's run block with trained parameters")
    r.add_argument("file")
    r.add_argument("--checkpoint", help="the parameters to use (default: FILE .safetensors)")
    r.add_argument("--best", action="store_true",
                   help="use the parameters with the best held-out loss (NAME.best."
                        "safetensors, kept when the train block has eval)")
    r.add_argument("--seed", type=int, help="initialize untrained modules with this seed")
    r.add_argument("--weights", help="parameters from a safetensors file named by parameter "
                                     "path (a dp checkpoint or, say, PyTorch's)")
    _choices(r)
    r.add_argument("--data", metavar="PATH",
                   help="the train block's data read from PATH, as `dp train --data` read it")
    n = sub.add_parser("generate", help="write text with the trained language model")
    n.add_argument("file")
    n.add_argument("prompt", help="the text to go on from")
    n.add_argument("-n", type=int, default=200, help="characters to write (default: 200)")
    n.add_argument("--temperature", type=float, default=1.0,
                   help="0 takes the most likely character; higher is more varied (default 1)")
    n.add_argument("--top-k", type=int, default=0,
                   help="sample from the k most likely characters only (default: all)")
    n.add_argument("--seed", type=int, default=0, help="the same seed writes the same text")
    n.add_argument("--checkpoint", help="the parameters to use (default: FILE .safetensors)")
    _choices(n)
    n.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
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
    x = sub.add_parser("export", help="write a module's inference graph as an ONNX file")
    x.add_argument("file")
    x.add_argument("module")
    x.add_argument("-o", "--output", help="where to write (default: MODULE.onnx)")
    x.add_argument("--checkpoint", help="the parameters to use (default: FILE .safetensors, "
                                        "when MODULE is the model its train block trains)")
    x.add_argument("--seed", type=int, help="initialize an untrained module with this seed")
    _choices(x)
    k = sub.add_parser("gradcheck", help="the model's gradients against central differences "
                                         "(float64, random inputs)")
    k.add_argument("file")
    k.add_argument("module", nargs="?",
                   help="a module with concrete sizes (default: the train block's model)")
    k.add_argument("--eps", type=float, default=1e-6, help="the step (default: 1e-6)")
    k.add_argument("--tol", type=float, default=1e-4,
                   help="the largest error that passes (default: 1e-4)")
    k.add_argument("--seed", type=int, default=0, help="parameters, inputs, cotangent")
    k.add_argument("--batch", type=int, default=2, help="examples (default: 2)")
    k.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="choose a configuration argument of the train block's model, as dp "
                        "train does: --set cell=LSTM")
    for q in (c, t, r, s, e, g, x, k):
        q.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    for q in (c, t, r, n, x, e):
        q.add_argument("--max-memory", type=_size, metavar="SIZE",
                       help="refuse a model whose buffers need more (default 8G; K, M, G, T "
                            "are powers of 1024)")
    return p


def _size(text: str) -> int:
    from dp.interpreter.core.memory import parse_size

    size = parse_size(text)
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write bytes, or a number "
                                         "with K, M, G or T (such as 3G)")
    return size


def _choices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a configuration argument of the trained model, as it was trained: "
                        "--set cell=LSTM")


def main(argv: list[str] | None = None) -> int:
    """The exit code; under MPI, a rank that stops alone ends the job (distributed.leave)."""
    try:
        code = _main(argv)
    except Exception:  # --debug lets a bug's traceback out: under MPI, end the job after it
        if distributed.WORLD.size > 1:
            traceback.print_exc()
            distributed.leave(4)
        raise
    return distributed.leave(code)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        if args.command == "gradcheck":  # many small products: BLAS threads only slow them
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(name, "1")  # (five times on a busy machine)
        if debug:  # re-check every plan lowering and fusion build (a bug shows where it is made)
            from dp.interpreter.core import plan
            plan.CHECK_PLANS = True
        launched = distributed.start_workers(getattr(args, "workers", None), argv)
        if launched is not None:  # `dp train --workers N` ran mpiexec
            return launched
        from . import handlers as commands

        if getattr(args, "max_memory", None) is None:
            return getattr(commands, args.command)(args)
        from dp.interpreter.core.memory import memory_limit

        with memory_limit(args.max_memory):
            return getattr(commands, args.command)(args)
    except DpError as err:
        if debug:
            traceback.print_exc()
        shown = distributed.settle(err)  # under MPI, rank 0 alone says what all ranks met
        if shown is not None:
            colour = wants_colour(sys.stderr)
            print(colour_error(shown) if colour else format_error(shown), file=sys.stderr)
        err = shown or err
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
