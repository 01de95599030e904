"""The pieces of train and run blocks: literal values, data sources (by the rules of
blocks.py) and the modules a block names. check_blocks.py and check_runs.py put them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from . import typed as T
from .blocks import SIGN_LOSSES, SOURCE_FORMS, SOURCES, TEXTS, VALUE_LOSSES, Arg
from .errors import DpError, suggest
from .signatures import expr_text, unbound_error
from .types import ModSig


@dataclass(frozen=True)
class Modules:
    """What blocks may name: every signature, the modules with a definition, the abstract
    ones."""

    sigs: dict[str, ModSig]
    defined: frozenset[str]
    abstracts: dict[str, ModSig]
    unbound: dict[str, str] = field(default_factory=dict)  # module -> an argument with no default


def attempt(errors: list[DpError], fn, *args):
    """fn(*args), or None with its error (or errors) added to `errors`."""
    try:
        return fn(*args)
    except DpError as e:
        errors.extend(getattr(e, "errors", [e]))
        return None


# --- modules ----------------------------------------------------------------------------------
def module(e: ast.Expr, modules: Modules, data: bool) -> tuple[str, ModSig]:
    """A module a block names: declared, defined, concrete and, to read `data`, of one
    argument."""
    if not isinstance(e, ast.Name):
        raise DpError("type", f"expected the name of a module, e.g. Digits, but found "
                      f"{written(e)}", e.span)
    name = e.name
    if name in modules.abstracts:
        raise DpError("type", f"{name} is abstract: train an implementation of it", e.span)
    if name not in modules.sigs:
        raise DpError("name", f"unknown module '{name}'", e.span,
                      suggest(name, set(modules.sigs) | set(modules.abstracts)))
    if name not in modules.defined:
        raise DpError("name", f"{name} has a signature but no definition", e.span,
                      (f"define it: {name}(x) = ...",))
    sig = modules.sigs[name]
    if any(not isinstance(d, int) for t in sig.args + (sig.result,)
           for d in t.shape + ((t.vocab,) if t.vocab is not None else ())):
        raise DpError("shape", f"{name}: {sig} has open dimensions; a model to train or run "
                      "needs concrete sizes", e.span,
                      (f"write a module with a concrete signature that uses {name}",))
    if name in modules.unbound:
        raise unbound_error(name, modules.unbound[name], e.span)
    if data and len(sig.args) != 1:
        raise DpError("arity", f"data feeds a module of one argument, but {name} takes "
                      f"{len(sig.args)}: {sig}", e.span)
    return name, sig


def trained_outputs(name: str, sig: ModSig, loss: str, span) -> str:
    """What the model's outputs are under its loss: "tokens", "classes", "values" or "signs"
    (one score whose sign is one of two classes)."""
    result = sig.result
    if result.vocab is not None and loss != "cross_entropy":
        what = (f"{loss} compares real values" if loss in VALUE_LOSSES else
                f"{loss} scores two classes by the sign of one score, R or R^1")
        raise DpError("type", f"{what}, but {name} gives tokens, {result}", span,
                      ("a model of tokens trains with cross_entropy",))
    if result.vocab is not None:
        return "tokens"
    if loss in VALUE_LOSSES:
        return "values"
    if loss in SIGN_LOSSES:
        if result.shape not in ((), (1,)):
            raise DpError("shape", f"{loss} scores two classes by the sign of one score, R or "
                          f"R^1, but {name} gives {result}", span,
                          ("for k classes, give scores R^k and train with cross_entropy",))
        return "signs"
    if result.rank != 1:
        raise DpError("shape", f"cross_entropy needs scores R^k, but {name} gives {result}",
                      span, ("for real-valued outputs, train with loss squared_error; for two "
                             "classes by the sign of a score R, with logistic or hinge",))
    if result.shape == (1,):
        raise DpError("shape", f"cross_entropy needs scores of two classes or more, R^k, but "
                      f"{name} gives R^1: the one class is always right", span,
                      ("for two classes by the sign of one score, train with loss logistic "
                       "or hinge; for a real value, with squared_error",))
    return "classes"


def untrained_outputs(sig: ModSig) -> str:
    """Without a train block: scores R^k (k > 1) are classes, anything else real is values."""
    if sig.result.vocab is not None:
        return "tokens"
    return "classes" if sig.result.rank == 1 and sig.result.shape != (1,) else "values"


def feeds(source: T.TSource, name: str, sig: ModSig) -> None:
    """Token sequences (text, reversal) feed only a model that reads them."""
    arg = sig.args[0]
    if SOURCES[source.kind].tokens and (arg.vocab is None or arg.rank != 1):
        raise DpError("type", f"{source.kind} feeds a model of token sequences, Token[V]^n, "
                      f"but {name} reads {arg}", source.span)

# --- literals ---------------------------------------------------------------------------------
def literal(e: ast.Expr, what: str):
    """The value of a literal: a number, a string or a bare word (`train`)."""
    if isinstance(e, ast.Number):
        return int(e.value) if e.value.is_integer() else e.value
    if isinstance(e, ast.Neg) and isinstance(e.operand, ast.Number):
        return -literal(e.operand, what)
    if isinstance(e, ast.String):
        return e.value
    if isinstance(e, ast.Name):
        return e.name
    raise DpError("type", f"{what} must be a number, a string or a word, but it is "
                  f"{written(e)}", e.span)


def written(e: ast.Expr) -> str:
    """An expression of a block as it is written (with standard spacing)."""
    return expr_text(e, 200, named=", ")


def _by_rule(e: ast.Expr, arg: Arg, what: str):
    value = literal(e, what)
    try:
        return arg.accept(value)
    except (ValueError, TypeError):
        raise DpError("value", f"{what} must be {arg.says}, but it is {written(e)}", e.span,
                      suggest(str(value), arg.choices)) from None


def named(call: ast.Call, table: dict[str, Arg], noun: str) -> dict:
    """The named arguments of `call`, by the table's rules, the defaults filled in."""
    given: dict = {}
    for kw in call.kwargs:
        if kw.name not in table:
            raise DpError("name", f"{call.func} has no {noun} '{kw.name}'; it has "
                          f"{', '.join(table) or 'none'}", kw.span, suggest(kw.name, table))
        if kw.name in given:
            raise DpError("name", f"{call.func} is given '{kw.name}' twice", kw.span)
        given[kw.name] = _by_rule(kw.value, table[kw.name], f"{call.func} {kw.name}")
    return {k: given.get(k, a.default) for k, a in table.items()}


def whole(e: ast.Expr, what: str, lowest: int) -> int:
    value = literal(e, what)
    if not isinstance(value, int) or value < lowest:
        rule = "a positive" if lowest == 1 else "a non-negative"
        raise DpError("value", f"{what} must be {rule} whole number, but it is {written(e)}",
                      e.span)
    return value

# --- data sources -----------------------------------------------------------------------------
def check_source(e: ast.Expr) -> T.TSource:
    """A data source by its own rules (a model's needs are checked where it is used); the
    REPL reads examples through it too."""
    if not isinstance(e, ast.Call) or e.func not in SOURCES:
        name = e.func if isinstance(e, ast.Call) else getattr(e, "name", "")
        raise DpError("name", f"expected a data source: {SOURCE_FORMS}", e.span,
                      suggest(name, SOURCES))
    source = SOURCES[e.func]
    file, text = _positional(e, source.positional)
    args = named(e, source.args, "argument")
    targets = source.targets is None or (source.targets != ""
                                         and args[source.targets] is not None)
    windows = e.func == "text" and args["split"] == "train"
    return T.TSource(e.func, tuple(args.items()), e.span, file, text, targets, windows)


def _positional(e: ast.Call, kind: str | None) -> tuple[str | None, str | None]:
    """(the file named, the text named) by a source's positional argument."""
    example = SOURCES[e.func].example
    if kind is None:
        if e.args:
            raise DpError("arity", f"{e.func} takes only named arguments, e.g. {example}",
                          e.args[0].span)
        return None, None
    if kind == "file":
        form = f"{e.func} takes the file name as a string, e.g. {example}"
    else:
        form = ("text takes a file name, text(\"book.txt\"), or the text that comes with "
                "Python, text(pydoc_topics)")
    if len(e.args) != 1:
        raise DpError("arity", form, e.span)
    a = e.args[0]
    if isinstance(a, ast.String):
        return a.value, None
    if kind == "text" and isinstance(a, ast.Name):
        if a.name not in TEXTS:
            raise DpError("name", f"unknown text '{a.name}'; give a file name as a string, or "
                          f"{' or '.join(TEXTS)}", a.span, suggest(a.name, TEXTS))
        return None, a.name
    raise DpError("type", form, a.span)

