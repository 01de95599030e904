"""`dp repl`: a thin shell that runs parse -> check -> lower -> execute on one input at a time.

The session keeps a checked environment, the standard library, the programs loaded and the
declarations typed so far, as one list of items checked whole after every change: a change
that does not check is refused and the environment stays as it was. It also keeps named
values (repl_values.py). An expression is evaluated as a module of its own, `the
expression(x, ...) = E` over the named values, checked by the real checker and run by a
`Model` of it, as training and `dp run` run a module. Each module call in it starts from the
session's seed, as a model of that module alone would, so `Digits(x)` gives here what
`Model(Digits).init(seed)` gives, the same every time, until Digits changes. The reports of a
run block, checked and run as there, show a module loaded with its checkpoint at work:
`predict(M, csv("f.csv"), 5)`, `loss(...)`, `accuracy(...)`, and a language model writes text
with `generate(M, "The ", 200; ...)`. Everything typed is one source file, `<repl>`, a line per
input, so errors point at the input as typed. The terminal around a session is
repl_terminal.py.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
from dp.dsl import ast
from dp.dsl.blocks import REPORTS
from dp.dsl.builtins import BUILTINS
from dp.dsl.checker import check, check_expr
from dp.dsl.errors import DpError, Span, format_error, suggest
from dp.dsl.loader import read_program, stdlib_programs
from dp.dsl.parser import parse, parse_input
from dp.dsl.types import Tensor
from dp.interpreter.core.model import Model
from dp.interpreter.data.text import Vocab
from dp.interpreter.training.checkpoint import load_checkpoint
from dp.interpreter.training.reports import report_value
from dp.interpreter.training.train import checkpoint_path

from .colour import colour_error, wants_colour
from .internal_error import internal_error
from .repl_values import EXAMPLES, Value, example, is_example, random_value
from .structure import call_form, describe_module, module_sites, param_table, site_name

FILE = "<repl>"
EXPR = "the expression"  # the module an expression runs as: not a name a program can declare
PROMPT, MORE = "dp> ", "... "
HELP = """\
  x: R^(3, 4)           a value of that type: standard normal numbers (t: Token[10]^5: ids)
  x = EXPR              the value of an expression, or one example of data:
                        x = digits(split = test)[0]
  EXPR                  check and run an expression on the values: FeedForward(x) : R^8
  Module                its signature, its call sites and its parameters
  Name: R^n -> R^n      declare a module: its signature, then its definition and any
  Name(x) = ...         indented lines (  param W: R^(n, n) ~ glorot); an empty line ends it.
                        Declaring a module again replaces it, if the new one checks.
  generate(M, "The ", 200; temperature = 0.8, top_k = 10, seed = 0)
                        text from a language model M loaded with :load after dp train
  predict(M, csv("f.csv"), 5)
                        a run block's report (also loss, accuracy, ...) of M as loaded
  :type EXPR            the type of an expression, without running it
  :params [MODULE]      a module's parameters (or those of the last expression run)
  :load FILE            add the modules of a program
  :seed N               the seed of module parameters and random values (now {seed})
  :help                 this text
  :quit                 leave (or Ctrl-D)"""



class Session:
    """The environment and values of one REPL session; `feed` takes one line at a time."""

    def __init__(self, out=None, err=None):
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.items = [item for p in stdlib_programs() for item in p.items]
        self.tprog = check(_programs(self.items))
        self.values: dict[str, Value] = {}
        self.lines: list[str] = []
        self.sources: dict[str, str] = {}
        self.pending: list[int] = []  # the lines of a declaration still being typed
        self.pending_def = False  # ... and whether it has reached its definition
        self.seed = 0
        self.last_specs: dict | None = None
        self.trained: dict[str, dict[str, np.ndarray]] = {}  # a module's checkpoint, by path
        self.trained_by: dict[str, tuple] = {}  # ... its train block and text vocabulary
        self.failed = False

    # --- input
    def feed(self, text: str) -> bool:
        """Take one line; False when the session should end."""
        self.lines.append(text.rstrip("\r\n"))
        self.sources[FILE] = "\n".join(self.lines)
        line = len(self.lines)
        if self.pending:
            if self._continues(text):
                self.pending.append(line)
                self.pending_def = True
                return True
            self.finish()
        return self.guard(self._input, text, line)

    def _continues(self, text: str) -> bool:
        """An indented line continues a definition; after a signature, its definition comes."""
        if not text.strip():
            return False
        return text[:1].isspace() or not (self.pending_def or text.lstrip().startswith(":"))

    def finish(self) -> None:
        """Declare what the pending lines say: a signature, a definition and its block."""
        lines, self.pending = self.pending, []
        text = "\n" * (lines[0] - 1) + "\n".join(self.lines[i - 1] for i in lines)
        self.guard(lambda: self.declare(parse(text, FILE).items))

    def _input(self, text: str, line: int) -> bool:
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return True
        if stripped.startswith(":"):
            return self._command(text, line)
        entry = self._parse(text, line)
        if isinstance(entry, list):
            if len(entry) == 1 and isinstance(entry[0], (ast.Signature, ast.Definition)):
                self.pending, self.pending_def = [line], isinstance(entry[0], ast.Definition)
            else:
                self.declare(entry)
        elif isinstance(entry, ast.Let):
            self._value(entry.name, entry.span, *self.evaluate(entry.value))
        elif isinstance(entry, ast.Ascribe) and isinstance(entry.expr, ast.Name):
            self._random(entry.expr, entry.type)
        elif isinstance(entry, ast.Name) and self._is_module(entry.name):
            self.say("\n".join(self._describe(entry.name)))
        elif isinstance(entry, ast.Call) and entry.func in REPORTS and not self._is_module(
                entry.func):
            self.say(self._report(entry))
        else:
            self._show(*self.evaluate(entry))
        return True

    def _parse(self, text: str, line: int):
        """A value to show or name, else declarations (a list of items). When the line is
        neither, the error of the reading that got further is the one to show."""
        try:
            return parse_input(text, FILE, line)
        except DpError as as_value:
            try:
                return list(parse("\n" * (line - 1) + text, FILE).items)
            except DpError as as_declaration:
                raise max(as_value, as_declaration, key=_reach) from None

    # --- declarations
    def declare(self, items, loaded: str | None = None) -> None:
        """Add or replace modules. A signature replaces the module's signature and definition;
        a definition alone, its definition. Nothing changes unless everything checks."""
        new = [i for i in items if isinstance(i, (ast.Signature, ast.AbstractDecl,
                                                  ast.Definition))]
        sigs = {i.name for i in new if not isinstance(i, ast.Definition)}
        defs = {i.name for i in new if isinstance(i, ast.Definition)}
        kept = [i for i in self.items if i.name not in sigs
                and not (isinstance(i, ast.Definition) and i.name in defs)]
        tprog = check(_programs(kept + new))
        old, self.items, self.tprog = self.tprog, kept + new, tprog
        names = list(dict.fromkeys(i.name for i in new))
        for name in names:
            self.trained.pop(name, None)
            self.trained_by.pop(name, None)
        if loaded is not None:
            self.say(f"loaded {loaded}: {', '.join(names) or 'no modules'}")
            return
        for name in names:
            again = name in old.signatures or name in old.abstracts
            self.say(f"{'redefined' if again else 'defined'} {self._sig_line(name)}")

    def load(self, path: str) -> None:
        """A program's modules, and the parameters its train block saved, if it has run."""
        text, program = read_program(path)
        self.sources[path] = text
        self.declare(program.items, loaded=path)
        trains = tuple(i for i in program.items if isinstance(i, ast.TrainBlock))
        if trains:  # checked against the session's modules, as `dp check` would
            block = check(_programs(self.items) + [ast.Program(path, trains)]).train
            name, ckpt = block.model, checkpoint_path(path, None, block)
            if not os.path.exists(ckpt):
                return
            tensors, meta = load_checkpoint(ckpt)
            self.trained[name] = {k[len(name) + 1:]: v for k, v in tensors.items()
                                  if k.startswith(name + ".")}
            vocab = Vocab.from_json(meta["vocab"], ckpt) if "vocab" in meta else None
            self.trained_by[name] = (trains[0], vocab)
            self.say(f"{name} runs with the parameters trained in {ckpt} (step "
                     f"{meta.get('step', '?')})")

    def _report(self, e: ast.Call) -> str:
        """A report of a run block typed here (`predict(M, csv("f.csv"), 5)`, `loss`,
        `accuracy`, `generate(M, "The ", 200; ...)`), checked as in a run block, with the train
        block of the program M was loaded from: M runs with its trained parameters (else from
        the session's seed; generate needs them, and the vocabulary of its checkpoint), and
        data files are read from the current folder, as `x = csv("f.csv")[0]` reads them."""
        first = e.args[0] if e.args else None
        name = first.name if isinstance(first, ast.Name) else None
        if e.func == "generate" and name in self.tprog.defs and name not in self.trained_by:
            raise DpError("value", f"{name} has no trained parameters here: generate writes "
                          "with a language model trained by dp train FILE and loaded with "
                          ":load FILE", first.span)
        block, vocab = self.trained_by.get(name, (None, None))
        run = ast.RunBlock((ast.Print((e,), e.span),), e.span)
        tprog = check(_programs(self.items) + [
            ast.Program(FILE, ((block,) if block else ()) + (run,))])
        model = Model(tprog, name, first.span)
        model.init(self.seed)
        if name in self.trained and not model.load_part(f"{name}.", self.trained[name]):
            raise DpError("checkpoint", f"{name} does not have the parameters its checkpoint "
                          "holds (was it trained with dp train --set?)", first.span)
        model.vocab = vocab
        return report_value(tprog.runs[-1].prints[0].items[0], {name: model}, ".")

    def _is_module(self, name: str) -> bool:
        return name in self.tprog.signatures or name in self.tprog.abstracts

    def _sig_line(self, name: str) -> str:
        if name in self.tprog.abstracts:
            return f"abstract {name}: {self.tprog.abstracts[name]}"
        return f"{name}: {self.tprog.signatures[name]}"

    def _describe(self, name: str) -> list[str]:
        if name in self.tprog.defs:  # the signature, its configuration, then what it holds
            tdef = self.tprog.defs[name]
            first, *rest = describe_module(self.tprog, tdef)
            configured = tdef.sizes or tdef.reals or tdef.config
            return [first] + ([f"  called as {call_form(tdef)}"] if configured else []) + rest
        return [self._sig_line(name) + ("" if name in self.tprog.abstracts
                                        else "  (no definition yet)")]

    # --- values
    def _random(self, name: ast.Name, t: ast.TypeAst) -> None:
        self._value(name.name, name.span, *random_value(name.name, t, self.seed))

    def _value(self, name: str, span: Span, t: Tensor, array: np.ndarray, note: str) -> None:
        if self._is_module(name) or name in BUILTINS:
            raise DpError("name", f"{name} is a module; a value needs another name", span)
        self.values[name] = Value(t, array)
        self._show(t, array, note, name)

    def evaluate(self, e: ast.Expr) -> tuple[Tensor, np.ndarray, str]:
        """The expression's type and value: checked and run as a module whose inputs are the
        session's values, its parameters from the seed as a model of each callee would have."""
        if is_example(e):
            return example(e)
        model = Model(self._check(e), EXPR, e.span)
        model.init(self.seed, each_call=True)
        self._use_trained(model)
        inputs = [np.zeros(1, np.float32)] + [v.array[None] for v in self.values.values()]
        with np.errstate(all="ignore"):
            out = model.predict(*inputs)[0]
        self.last_specs = model.specs
        t = model.sig.result
        if t.vocab is not None and out.ndim == t.rank + 1:  # scores over the vocabulary
            return t, out.argmax(axis=-1), ", the most likely tokens"
        return t, out, ""

    def _use_trained(self, model: Model) -> None:
        """A call of a module loaded with its checkpoint runs with the trained parameters
        (while its parameters are still the checkpoint's: same paths, same shapes)."""
        tdef = model.tprog.defs[EXPR]
        for call, _ in module_sites(tdef):
            trained = self.trained.get(call.callee.name)
            if trained:
                model.load_part(f"{EXPR}.{site_name(tdef, call)}.", trained)

    def _check(self, e: ast.Expr):
        """Every value is an input (unused ones cost nothing), so a misspelt name gets a
        suggestion. The first input is a zero scalar that no name reaches: lowering gives a
        constant result the first input's shape (`2 + 3` runs as `zero + 5`)."""
        inputs = {"<zero>": Tensor(())} | {n: v.type for n, v in self.values.items()}
        return check_expr(_programs(self.items), EXPR, inputs, e)

    # --- commands
    def _command(self, text: str, line: int) -> bool:
        m = re.match(r"\s*:(\w*)\s*(.*?)\s*$", text)
        name, rest, col = m.group(1), m.group(2), m.start(2) + 1
        matches = [c for c in COMMANDS if c.startswith(name)] if name else []
        if name not in COMMANDS and len(matches) != 1:
            raise DpError("usage", f"unknown command ':{name}'",
                          Span(FILE, line, 1, line, len(text.rstrip()) + 1),
                          suggest(name, COMMANDS) or ("see :help",))
        command = name if name in COMMANDS else matches[0]
        if COMMANDS[command] and not rest:
            raise DpError("usage", f"give :{command} {COMMANDS[command]}",
                          Span(FILE, line, 1, line, col))
        return getattr(self, f"_cmd_{command}")(rest, line, col) is not False

    def _cmd_type(self, rest: str, line: int, col: int) -> None:
        e = parse_input(rest, FILE, line, col)
        if isinstance(e, ast.Let):
            raise DpError("usage", ":type takes an expression, not a binding", e.span)
        if isinstance(e, ast.Name) and self._is_module(e.name):
            self.say(self._sig_line(e.name))
            return
        t = example(e)[0] if is_example(e) else self._check(e).signatures[EXPR].result
        shown = e.expr if isinstance(e, ast.Ascribe) else e
        self.say(f"{rest[:shown.span.end_col - col]} : {t}")

    def _cmd_params(self, rest: str, line: int, col: int) -> None:
        if not rest:
            if self.last_specs is None:
                self.say("no expression has run yet: :params MODULE, or run one first")
                return
            prefix = len(EXPR) + 1
            self.say("\n".join(param_table({p[prefix:]: s.shape for p, s in
                                            self.last_specs.items()})))
            return
        span = Span(FILE, line, col, line, col + len(rest))
        if rest not in self.tprog.defs:
            raise DpError("name", f"unknown module '{rest}'" if not self._is_module(rest) else
                          f"{rest} has no definition", span, suggest(rest, self.tprog.defs))
        tdef = self.tprog.defs[rest]
        if any(not isinstance(d, int) for t in tdef.sig.args + (tdef.sig.result,)
               for d in t.shape):
            self.say("\n".join(self._describe(rest) + [
                "  (its sizes are open: run it in an expression, then :params shows them)"]))
            return
        self.say("\n".join([self._sig_line(rest)] +
                           param_table({p: s.shape for p, s in
                                       Model(self.tprog, rest, span).specs.items()})))

    def _cmd_load(self, rest: str, line: int, col: int) -> None:
        self.load(rest)

    def _cmd_seed(self, rest: str, line: int, col: int) -> None:
        if not rest.isdigit():
            raise DpError("usage", "the seed is a whole number, e.g. :seed 1",
                          Span(FILE, line, col, line, col + len(rest)))
        self.seed = int(rest)
        self.say(f"seed {self.seed}: module parameters and new random values come from it")

    def _cmd_help(self, rest: str, line: int, col: int) -> None:
        self.say(HELP.format(seed=self.seed))

    def _cmd_quit(self, rest: str, line: int, col: int) -> bool:
        return False

    # --- output
    def names(self) -> list[str]:
        """What a name typed here can be: modules, values, built-ins and data sources."""
        return sorted(set(self.tprog.signatures) | set(self.tprog.abstracts)
                      | set(self.values) | set(BUILTINS) | set(EXAMPLES) | set(REPORTS))

    def _show(self, t: Tensor, array: np.ndarray, note: str, name: str | None = None) -> None:
        head = f"{name} : {t}" if name else str(t)
        self.say(f"{head}  shape {array.shape}{note}")
        self.say(np.array2string(array, precision=4, suppress_small=True, threshold=32,
                                 edgeitems=4, max_line_width=96))

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def guard(self, fn, *args) -> bool:
        """Run one input; show any error as docs/language.md describes and go on."""
        try:
            return fn(*args) is not False
        except DpError as err:
            show = colour_error if wants_colour(self.err) else format_error
            self._fail(show(err, self.sources))
        except KeyboardInterrupt:
            self._fail("interrupted")
        except Exception as exc:  # a bug in dp: never a traceback in the user's way
            self._fail(internal_error(exc))
        return True

    def _fail(self, text: str) -> None:
        self.failed = True
        self.out.flush()
        print(text, file=self.err, flush=True)


# the commands, with what each needs after it (empty: nothing or an optional word)
COMMANDS = {"type": "EXPR", "params": "", "load": "FILE", "seed": "N", "help": "",
            "quit": ""}


def _programs(items) -> list[ast.Program]:
    return [ast.Program("<environment>", tuple(items))]


def _reach(err: DpError) -> tuple[int, int]:
    return (err.span.line, err.span.col) if err.span else (0, 0)
