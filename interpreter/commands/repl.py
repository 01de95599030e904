"""`dp repl`: a thin shell that runs parse -> check -> lower -> execute on one input at a time.

The session keeps a checked environment, the standard library, the programs loaded and the
declarations typed so far, as one list of items checked whole after every change: a change
that does not check is refused and the environment stays as it was. It also keeps named
values. An expression is evaluated as a module of its own, `the expression(x, ...) = E` over
the named values, checked by the real checker, lowered at batch 1 and executed. Each module
call in it starts from the session's seed, as a model of that module alone would, so
`Digits(x)` gives here what `Model(Digits).init(seed)` gives, the same every time, until
Digits changes. Everything typed is one source file, `<repl>`, a line per input, so errors
point at the input as typed.
"""

from __future__ import annotations

import math
import os
import re
import sys
import zlib
from dataclasses import dataclass

import numpy as np
from dp.dsl import ast
from dp.dsl.blocks import SOURCES
from dp.dsl.check_sources import check_source
from dp.dsl.checker import check, check_expr, concrete_type
from dp.dsl.errors import DpError, Span, format_error
from dp.dsl.errors import suggest as _suggest
from dp.dsl.loader import read_program, stdlib_programs
from dp.dsl.parser import parse, parse_input
from dp.dsl.builtins import BUILTINS
from dp.dsl.types import Tensor
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.lower import BYTES_LIMIT, lower
from dp.interpreter.core.model import greedy
from dp.interpreter.core.params import allocate, initialize
from dp.interpreter.data.sources import dataset
from dp.interpreter.training.checkpoint import load_checkpoint
from dp.interpreter.training.train import checkpoint_path
from prompt_toolkit.completion import Completer, Completion

from .internal_error import internal_error
from .structure import describe_module, module_sites, param_table, site_name

FILE = "<repl>"
EXPR = "the expression"  # the module an expression runs as: not a name a program can declare
PROMPT, MORE = "dp> ", "... "
EXAMPLES = ("digits", "npz", "csv")  # the data sources a value can be one example of
HELP = """\
  x: R^(3, 4)           a value of that type: standard normal numbers (t: Token[10]^5: ids)
  x = EXPR              the value of an expression, or one example of data:
                        x = digits(split = test)[0]
  EXPR                  check and run an expression on the values: FeedForward(x) : R^8
  Module                its signature, its call sites and its parameters
  Name: R^n -> R^n      declare a module: its signature, then its definition and any
  Name(x) = ...         indented lines (  param W: R^(n, n) ~ glorot); an empty line ends it.
                        Declaring a module again replaces it, if the new one checks.
  :type EXPR            the type of an expression, without running it
  :params [MODULE]      a module's parameters (or those of the last expression run)
  :load FILE            add the modules of a program
  :seed N               the seed of module parameters and random values (now {seed})
  :help                 this text
  :quit                 leave (or Ctrl-D)"""


@dataclass(frozen=True)
class Value:
    type: Tensor
    array: np.ndarray  # one example: the type's shape; token ids are int64


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
            self._say("\n".join(self._describe(entry.name)))
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
        if loaded is not None:
            self._say(f"loaded {loaded}: {', '.join(names) or 'no modules'}")
            return
        for name in names:
            again = name in old.signatures or name in old.abstracts
            self._say(f"{'redefined' if again else 'defined'} {self._sig_line(name)}")

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
            self._say(f"{name} runs with the parameters trained in {ckpt} (step "
                      f"{meta.get('step', '?')})")

    def _is_module(self, name: str) -> bool:
        return name in self.tprog.signatures or name in self.tprog.abstracts

    def _sig_line(self, name: str) -> str:
        if name in self.tprog.abstracts:
            return f"abstract {name}: {self.tprog.abstracts[name]}"
        return f"{name}: {self.tprog.signatures[name]}"

    def _describe(self, name: str) -> list[str]:
        if name in self.tprog.defs:
            return describe_module(self.tprog, self.tprog.defs[name])
        return [self._sig_line(name) + ("" if name in self.tprog.abstracts
                                        else "  (no definition yet)")]

    # --- values
    def _random(self, name: ast.Name, t: ast.TypeAst) -> None:
        """`x: T`: random numbers from the seed and the name, so the same line gives the same
        x in any session (token ids uniformly from the vocabulary)."""
        tensor = concrete_type(t)
        if 4 * math.prod(tensor.shape) > BYTES_LIMIT:
            raise DpError("resource", f"{tensor} needs {4 * math.prod(tensor.shape) / 2**30:.1f} "
                          f"GiB, more than the limit of {BYTES_LIMIT / 2**30:.0f} GiB", t.span)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.name.encode())])
        if tensor.vocab is None:
            array = np.asarray(rng.standard_normal(tensor.shape, np.float32))
            note = f", standard normal (seed {self.seed})"
        else:
            array = np.asarray(rng.integers(0, tensor.vocab, tensor.shape), np.int64)
            note = f", random tokens (seed {self.seed})"
        self._value(name.name, name.span, tensor, array, note)

    def _value(self, name: str, span: Span, t: Tensor, array: np.ndarray, note: str) -> None:
        if self._is_module(name) or name in BUILTINS:
            raise DpError("name", f"{name} is a module; a value needs another name", span)
        self.values[name] = Value(t, array)
        self._show(t, array, note, name)

    def evaluate(self, e: ast.Expr) -> tuple[Tensor, np.ndarray, str]:
        """The expression's type and value: checked, lowered and run as a module whose inputs
        are the session's values."""
        if _is_example(e):
            return self._example(e)
        tprog = self._check(e)
        plan = lower(tprog, EXPR, 1, e.span)
        _, views = allocate(plan.specs)
        for group in _by_call(plan.specs):
            initialize(group, views, np.random.default_rng(self.seed))
        self._use_trained(tprog, plan.specs, views)
        ex = Executable(plan)
        ex.bind(views)
        inputs = [np.zeros(1, np.float32)] + [v.array[None] for v in self.values.values()]
        with np.errstate(all="ignore"):
            if plan.previous is None:
                out = np.array(ex.outputs(ex.forward(*inputs))[0][0])
            else:  # it writes its output a token at a time (SequenceToSequence)
                out = greedy(ex, inputs, plan.outputs[0].shape[1:])[0]
        self.last_specs = plan.specs
        t = tprog.signatures[EXPR].result
        if t.vocab is not None and out.ndim == t.rank + 1:  # scores over the vocabulary
            return t, out.argmax(axis=-1), ", the most likely tokens"
        return t, out, ""

    def _use_trained(self, tprog, specs: dict, views: dict) -> None:
        """A call of a module loaded with its checkpoint runs with the trained parameters
        (while its parameters are still the checkpoint's: same paths, same shapes)."""
        tdef = tprog.defs[EXPR]
        for call, _ in module_sites(tdef):
            trained = self.trained.get(call.callee.name)
            if not trained:
                continue
            prefix = f"{EXPR}.{site_name(tdef, call)}."
            mine = {p[len(prefix):]: p for p in specs if p.startswith(prefix)}
            if mine.keys() == trained.keys() and all(
                    views[p].shape == trained[k].shape for k, p in mine.items()):
                for k, p in mine.items():
                    views[p][...] = trained[k]

    def _check(self, e: ast.Expr):
        """Every value is an input (unused ones cost nothing), so a misspelt name gets a
        suggestion. The first input is a zero scalar that no name reaches: lowering gives a
        constant result the first input's shape (`2 + 3` runs as `zero + 5`)."""
        inputs = {"<zero>": Tensor(())} | {n: v.type for n, v in self.values.items()}
        return check_expr(_programs(self.items), EXPR, inputs, e)

    def _example(self, e: ast.Index | ast.Ascribe) -> tuple[Tensor, np.ndarray, str]:
        """One example of a data set; `digits(split = test)[0] : R^(1, 8, 8)` lays its values
        out in another type of the same size, row-major, as a model's input would be."""
        want = concrete_type(e.type) if isinstance(e, ast.Ascribe) else None
        e = e.expr if isinstance(e, ast.Ascribe) else e
        source = check_source(e.table)
        if source.kind not in EXAMPLES:
            raise DpError("value", "a value can be one example of digits(...), "
                          f"npz(\"file.npz\") or csv(\"file.csv\"), not of {source.kind}(...)",
                          source.span)
        ds = dataset(source, ".")
        number = isinstance(e.index, ast.Number) and e.index.value.is_integer()
        i = int(e.index.value) if number else -1
        if not 0 <= i < len(ds):
            raise DpError("value", f"{ds.name} has {len(ds):,} examples, numbered 0 to "
                          f"{len(ds) - 1}", e.index.span)
        x = np.ascontiguousarray(ds.x[i], np.float32)
        t = Tensor(x.shape)
        if want is not None:
            if want.vocab is not None or math.prod(want.shape) != x.size:
                raise DpError("data", f"the examples of {ds.name} are {t}, {x.size} values, "
                              f"which cannot be laid out as {want}", e.span)
            t, x = want, x.reshape(want.shape)
        label = f", label {ds.y[i]}" if ds.y is not None and ds.y.ndim == 1 else ""
        return t, x, f", example {i} of {ds.name}{label}"

    # --- commands
    def _command(self, text: str, line: int) -> bool:
        m = re.match(r"\s*:(\w*)\s*(.*?)\s*$", text)
        name, rest, col = m.group(1), m.group(2), m.start(2) + 1
        matches = [c for c in COMMANDS if c.startswith(name)] if name else []
        if name not in COMMANDS and len(matches) != 1:
            raise DpError("usage", f"unknown command ':{name}'",
                          Span(FILE, line, 1, line, len(text.rstrip()) + 1),
                          _suggest(name, COMMANDS) or ("see :help",))
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
            self._say(self._sig_line(e.name))
            return
        t = self._example(e)[0] if _is_example(e) else self._check(e).signatures[EXPR].result
        shown = e.expr if isinstance(e, ast.Ascribe) else e
        self._say(f"{rest[:shown.span.end_col - col]} : {t}")

    def _cmd_params(self, rest: str, line: int, col: int) -> None:
        if not rest:
            if self.last_specs is None:
                self._say("no expression has run yet: :params MODULE, or run one first")
                return
            prefix = len(EXPR) + 1
            self._say("\n".join(param_table({p[prefix:]: s for p, s in
                                             self.last_specs.items()})))
            return
        span = Span(FILE, line, col, line, col + len(rest))
        if rest not in self.tprog.defs:
            raise DpError("name", f"unknown module '{rest}'" if not self._is_module(rest) else
                          f"{rest} has no definition", span, _suggest(rest, self.tprog.defs))
        tdef = self.tprog.defs[rest]
        if any(not isinstance(d, int) for t in tdef.sig.args + (tdef.sig.result,)
               for d in t.shape):
            self._say("\n".join(self._describe(rest) + [
                "  (its sizes are open: run it in an expression, then :params shows them)"]))
            return
        self._say("\n".join([self._sig_line(rest)] +
                            param_table(lower(self.tprog, rest, 1, span).specs)))

    def _cmd_load(self, rest: str, line: int, col: int) -> None:
        self.load(rest)

    def _cmd_seed(self, rest: str, line: int, col: int) -> None:
        if not rest.isdigit():
            raise DpError("usage", "the seed is a whole number, e.g. :seed 1",
                          Span(FILE, line, col, line, col + len(rest)))
        self.seed = int(rest)
        self._say(f"seed {self.seed}: module parameters and new random values come from it")

    def _cmd_help(self, rest: str, line: int, col: int) -> None:
        self._say(HELP.format(seed=self.seed))

    def _cmd_quit(self, rest: str, line: int, col: int) -> bool:
        return False

    # --- output
    def names(self) -> list[str]:
        """What a name typed here can be: modules, values, built-ins and data sources."""
        return sorted(set(self.tprog.signatures) | set(self.tprog.abstracts)
                      | set(self.values) | set(BUILTINS) | set(EXAMPLES))

    def _show(self, t: Tensor, array: np.ndarray, note: str, name: str | None = None) -> None:
        head = f"{name} : {t}" if name else str(t)
        self._say(f"{head}  shape {array.shape}{note}")
        self._say(np.array2string(array, precision=4, suppress_small=True, threshold=32,
                                  edgeitems=4, max_line_width=96))

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def guard(self, fn, *args) -> bool:
        """Run one input; show any error as DESIGN section 6 says and go on."""
        try:
            return fn(*args) is not False
        except DpError as err:
            self._fail(format_error(err, self.sources))
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


def _is_example(e) -> bool:
    """`digits(split = test)[0]`, perhaps with a type: one example of a data source."""
    if isinstance(e, ast.Ascribe):
        e = e.expr
    return (isinstance(e, ast.Index) and isinstance(e.table, ast.Call)
            and e.table.func in SOURCES)


def _by_call(specs: dict) -> list[dict]:
    """The parameters of each module call of the expression (`the expression.digits.W`)."""
    groups: dict[str, dict] = {}
    for path, spec in specs.items():
        groups.setdefault(path.split(".")[1], {})[path] = spec
    return list(groups.values())


# --- the terminal ---------------------------------------------------------------------------
class _Names(Completer):
    """Tab completes the names a session knows, and :commands at the start of a line."""

    def __init__(self, session: Session):
        self.session = session

    def get_completions(self, document, complete_event):
        m = re.search(r"^\s*:\w*$|[A-Za-z_]\w*$", document.text_before_cursor)
        if m is None:
            return
        word = m.group().strip()
        names = [":" + c for c in COMMANDS] if word.startswith(":") else self.session.names()
        for name in names:
            if name.startswith(word) and name != word:
                yield Completion(name, start_position=-len(word))


def _history():
    """$XDG_STATE_HOME/dp/repl_history (~/.local/state by default), else none kept."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    path = os.path.join(state, "dp", "repl_history")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
        return FileHistory(path)
    except OSError:
        return InMemoryHistory()


def _terminal_reader(session: Session):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.shortcuts import CompleteStyle

    prompt = PromptSession(history=_history(), completer=_Names(session),
                           complete_while_typing=False,
                           complete_style=CompleteStyle.READLINE_LIKE)
    return prompt.prompt


def _plain_reader(prompt: str) -> str:
    """Lines from a pipe or a file: no prompts, no terminal codes (typed lines whose answers
    go to a pipe get plain prompts on stderr)."""
    if sys.stdin.isatty():
        print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def repl_main(files: list[str]) -> int:
    """0 when the session ends (:quit, Ctrl-D, end of input); 1 when input that did not come
    from a terminal had an error, so a script of REPL lines can be checked."""
    session = Session()
    for path in files:
        session.guard(session.load, path)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    read = _terminal_reader(session) if interactive else _plain_reader
    if interactive:
        session._say("dp repl: the standard library is loaded. :help shows what to type; "
                     ":quit or Ctrl-D leaves.")
    while True:
        try:
            text = read(MORE if session.pending else PROMPT)
        except EOFError:
            break
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line and what is pending
            session.pending = []
            continue
        if not session.feed(text):
            break
    if session.pending:
        session.finish()
    return 1 if session.failed and not interactive else 0
