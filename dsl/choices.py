"""`--set NAME=VALUE` for a configuration argument of the trained model (`--set cell=LSTM`,
`--set layers=4`): the value replaces the argument's default in the syntax tree before the
program is checked, so the program is checked exactly as if it had been written with it. An
error in the value points at the argument and says that the value came from the command
line; a module that does not fit gets the list of the modules that do.

The other names `--set` takes, settings of the train block and arguments of its optimizer, are
check_blocks.override's. A name that is both is refused: the command line cannot say which.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import ast
from . import typed as T
from .blocks import OPTIMIZERS, OVERRIDES
from .builtins import BUILTINS
from .checker import check, is_real
from .errors import DpError, DpErrors
from .parser import parse_input
from .signatures import sig_matches, sig_unifies

COMMAND_LINE = "<command line>"  # the file of a value's spans: the n-th --set is line n


@dataclass(frozen=True)
class Choice:
    """One `--set NAME=VALUE` that chooses a configuration argument."""

    name: str
    text: str  # the value as typed
    item: ast.HeaderItem  # the argument as the program declares it
    module: bool  # a module argument; else a size
    value: ast.Expr
    line: int  # of COMMAND_LINE: the value's spans say which --set they are in

    def note(self) -> str:
        return f"{self.text} comes from the command line: --set {self.name}={self.text}"


def check_chosen(programs: list[ast.Program], sets: dict[str, str],
                 settings: bool = True) -> T.TProgram:
    """The programs (the user's last) checked with the values of `sets` that name
    configuration arguments of the model its train block trains; the other names are left to
    the caller. `settings`: whether the command also takes settings (`dp train`), which a
    configuration argument must not shadow."""
    chosen, choices = choose(programs, sets, settings)
    if not choices:
        return check(programs)
    try:
        return check(chosen)
    except DpErrors as e:
        raise DpErrors(_repointed(e.errors, choices, programs)) from None


def choose(programs: list[ast.Program], sets: dict[str, str],
           settings: bool) -> tuple[list[ast.Program], tuple[Choice, ...]]:
    """The programs with the chosen values as the defaults of the trained model's arguments."""
    trained = _train_block(programs)
    if trained is None:
        return programs, ()
    model, block = trained
    items = arguments(programs, model)
    clash = _setting_names(block) if settings else ()
    choices = []
    for line, (name, text) in enumerate(sets.items(), 1):
        if name not in items:
            continue
        if name in clash:
            raise DpError("usage", f"--set {name} is ambiguous: {name} is a setting of the "
                          f"train block and a configuration argument of {model}", None,
                          (f"rename {model}'s argument to choose it from the command line",))
        choices.append(_choice(programs, model, items[name], text, line))
    values = {c.name: c.value for c in choices}
    return [_rewritten(p, model, values) for p in programs], tuple(choices)


def arguments(programs: list[ast.Program], model: str) -> dict[str, ast.HeaderItem]:
    """The configuration arguments of `model`, sizes and modules, by name."""
    found: dict[str, ast.HeaderItem] = {}
    for item in (i for p in programs for i in p.items):
        if isinstance(item, ast.Signature) and item.name == model:
            found.update((h.name, h) for h in item.config)
        elif isinstance(item, ast.Definition) and item.name == model:
            found.update((h.name, h) for h in item.header if h.config)
    return found


def configuration_names(tprog: T.TProgram, model: str) -> tuple[str, ...]:
    """The names `--set` chooses for `model`: its module and size arguments."""
    tdef = tprog.defs.get(model)
    if tdef is None:
        return ()
    return (tuple(c.name for c in tdef.config) + tuple(tprog.sizes.get(model, ()))
            + tuple(name for name, _ in tdef.reals))


def only_choices(sets: dict[str, str], tprog: T.TProgram, command: str) -> None:
    """`dp run` and `dp generate` take `--set` for the trained model's arguments only (the
    ones it was trained with), never for settings."""
    model = tprog.train.model if tprog.train is not None else None
    names = configuration_names(tprog, model) if model else ()
    for name in sets:
        if name not in names:
            says = (f"{model}'s arguments: {', '.join(names)}" if names else
                    f"{model} has no configuration arguments" if model else
                    "the program has no train block")
            raise DpError("usage", f"--set {name}: dp {command} chooses configuration "
                          f"arguments of the trained model, and '{name}' is none", None,
                          (says,))


# --- one value ----------------------------------------------------------------------------------
def _choice(programs, model: str, item: ast.HeaderItem, text: str, line: int) -> Choice:
    real = is_real(item)
    size = not real and item.sig is None and (item.default is None
                                              or isinstance(item.default, ast.Number))
    try:
        value = parse_input(text, COMMAND_LINE, line, len(item.name) + 2)
    except DpError as err:
        raise DpError("usage", f"--set {item.name}={text}: {err.message}") from None
    chosen = Choice(item.name, text, item, not size and not real, value, line)
    if real:  # a number, written as a real one so that it stays one (`0` is `0.0`)
        if not isinstance(value, ast.Number):
            raise DpError("type", f"{item.name} is a number argument of {model}, not {text}",
                          item.span, (chosen.note(),))
        return replace(chosen, value=replace(value, text=repr(float(value.value))))
    if size and not (isinstance(value, ast.Number) and value.value.is_integer()
                     and value.value >= 1):
        raise DpError("type", f"{item.name} is a size of {model}, a positive whole number, "
                      f"not {text}", item.span, (chosen.note(),))
    if not size and not (isinstance(value, ast.Name) or (isinstance(value, ast.Call)
                                                         and not value.args)):
        raise DpError("type", f"{item.name} is a module argument of {model}, and {text} is "
                      "not a module", item.span,
                      (chosen.note(),) + _fit_note(programs, model, item.name))
    return chosen


def _rewritten(program: ast.Program, model: str, values: dict[str, ast.Expr]) -> ast.Program:
    def heads(items):
        return tuple(replace(h, default=values[h.name]) if h.config and h.name in values
                     else h for h in items)

    items = []
    for item in program.items:
        if isinstance(item, ast.Signature) and item.name == model:
            item = replace(item, config=heads(item.config))
        elif isinstance(item, ast.Definition) and item.name == model:
            item = replace(item, header=heads(item.header))
        items.append(item)
    return ast.Program(program.file, tuple(items))


def _repointed(errors: list[DpError], choices: tuple[Choice, ...],
               programs: list[ast.Program]) -> list[DpError]:
    """An error in a value points at the argument it replaces, and says where it came from."""
    by_line = {c.line: c for c in choices}
    out, seen = [], set()
    for err in errors:
        c = by_line.get(err.span.line) if err.span and err.span.file == COMMAND_LINE else None
        if c is not None:
            model = _train_block(programs)[0]
            fit = _fit_note(programs, model, c.name) if c.module else ()
            err = DpError(err.kind, err.message, c.item.span, err.notes + (c.note(),) + fit)
        key = (err.kind, err.message, err.span, err.notes)
        if key not in seen:
            seen.add(key)
            out.append(err)
    return out


# --- what fits --------------------------------------------------------------------------------
def fitting(programs: list[ast.Program], model: str, name: str) -> list[str]:
    """The modules (the programs' and the builtins) that fit `model`'s module argument
    `name`, by the rule a call checks a binding with: an implementation of the abstract module
    it is typed by, else a signature that unifies with its own (or its default's)."""
    bare = [ast.Program(p.file, tuple(i for i in p.items
                                      if not isinstance(i, (ast.TrainBlock, ast.RunBlock))))
            for p in programs]
    try:
        tprog = check(bare)
    except DpError:
        return []
    param = next((c for c in tprog.defs[model].config if c.name == name), None) if (
        model in tprog.defs) else None
    if param is None:
        return []
    usable = [n for n in tprog.defs if n != model]
    if isinstance(param.sig, str):
        abstract = tprog.abstracts[param.sig]
        fits = [n for n in usable if tprog.defs[n].implements == param.sig
                or sig_matches(tprog.signatures[n], abstract)]
    else:
        need = param.sig if param.sig is not None else _ref_sig(tprog, param.default)
        passable = [n for n, b in BUILTINS.items() if b.value is not None]
        fits = [] if need is None else (
            [n for n in usable if sig_unifies(tprog.signatures[n], need)]
            + [n for n in passable if sig_unifies(BUILTINS[n].value, need)])
    return sorted(_written(tprog.defs.get(n), n) for n in fits)


def _written(tdef: T.TDef | None, name: str) -> str:
    """How a module is passed: with the arguments it needs, `SequenceRNN(; cell = ...)`."""
    need = [c.name for c in tdef.config if c.default is None] if tdef else []
    return f"{name}(; {', '.join(f'{c} = ...' for c in need)})" if need else name


def _fit_note(programs, model: str, name: str) -> tuple[str, ...]:
    fits = fitting(programs, model, name)
    return (f"modules that fit '{name}': {', '.join(fits)}",) if fits else ()


def _ref_sig(tprog: T.TProgram, ref: T.ModRef | None):
    if isinstance(ref, T.GlobalMod):
        return tprog.signatures.get(ref.name)
    if isinstance(ref, T.BuiltinMod):
        return BUILTINS[ref.name].value
    return None


# --- the train block ----------------------------------------------------------------------------
def _train_block(programs: list[ast.Program]) -> tuple[str, ast.TrainBlock] | None:
    """The model the user's program (the last) trains, and its block."""
    block = next((i for i in programs[-1].items if isinstance(i, ast.TrainBlock)), None)
    if block is None or not isinstance(block.model, ast.Name):
        return None
    return block.model.name, block


def _setting_names(block: ast.TrainBlock) -> tuple[str, ...]:
    """What `--set` changes in this train block: OVERRIDES and its optimizer's arguments."""
    opt = next((s.value for s in block.settings if s.name == "optimizer"), None)
    name = opt.name if isinstance(opt, ast.Name) else getattr(opt, "func", None)
    return OVERRIDES + tuple(OPTIMIZERS.get(name, ()))
