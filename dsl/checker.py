"""Stage 2: ast.Program(s) -> typed.TProgram. Shapes, names and signatures, before anything runs.

Every definition is checked once, generically: its signature's dimension names are rigid, each
call site instantiates the callee's signature with fresh variables, and unification fixes them
from the arguments, the expected type (`(e : R^128)`, a typed let, the signature's result), an
explicit `m = 128`, or a later use. A fresh variable still open at the end of the definition is
"a dimension nothing fixes". Then every module with concrete sizes is walked as a model
(instances.py), for what only concrete sizes reveal. Errors are collected per top-level item
and raised together.
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .builtins import BUILTINS
from .check_blocks import check_blocks
from .check_body import _DefChecker
from .check_graph import module_graph_errors
from .check_sources import Modules
from .dims import fresh
from .errors import DpError, DpErrors, Span, where
from .instances import instance_errors
from .signatures import SizeArg, _err, _Globals, _TypeBuilder, sig_matches
from .types import ModSig, Tensor, scalar


# --- the program ------------------------------------------------------------------------------
def _size_args(name: str, g: _Globals) -> dict[str, SizeArg]:
    """Configuration items with a whole-number default, or with neither a signature nor a
    default when the signature names them (`StridedConv(x; k, s, p)`), are sizes."""
    d = g.defs.get(name)
    items = list(g.config.get(name, ())) + ([h for h in d.header if h.config] if d else [])
    sig_vars = {v.name: v for v in g.sigs[name].dims}
    out = {}
    for h in items:
        bare = h.default is None and h.name in sig_vars
        if h.sig is not None or not (bare or isinstance(h.default, ast.Number)) or is_real(h):
            continue
        default = None if h.default is None else int(h.default.value)  # whole: not is_real
        out[h.name] = SizeArg(sig_vars.get(h.name) or fresh(h.name, True), default, h.span,
                              default == 0)
    return out


def is_real(h: ast.HeaderItem) -> bool:
    """A configuration argument whose default is written as a real number (`dropout = 0.0`,
    with a point or an exponent) is a number, not a size: a probability or a scale, never a
    dimension."""
    return (h.sig is None and isinstance(h.default, ast.Number)
            and any(ch in h.default.text for ch in ".eE"))


def _real_args(name: str, g: _Globals) -> dict[str, float]:
    d = g.defs.get(name)
    items = list(g.config.get(name, ())) + ([h for h in d.header if h.config] if d else [])
    return {h.name: h.default.value for h in items if is_real(h)}


def check(programs: list[ast.Program]) -> T.TProgram:
    """Check a list of programs (the standard library first) as one program."""
    return _check(programs, None)


def check_expr(programs: list[ast.Program], name: str, inputs: dict[str, Tensor],
               expr: ast.Expr) -> T.TProgram:
    """The programs checked with one more module, `name(inputs) = expr`, whose result type is
    the expression's own. The REPL evaluates an expression as this module, so that it is
    checked, lowered and run like any other; `name` should be one no program can declare."""
    header = tuple(ast.HeaderItem(n, None, None, False, expr.span) for n in inputs)
    d = ast.Definition(name, header, (ast.Result(expr, expr.span),), expr.span)
    return _check(programs, (d, ModSig(tuple(inputs.values()), scalar(), ())))


def concrete_type(t: ast.TypeAst) -> Tensor:
    """A type whose sizes are all whole numbers, as a value's must be (`x: R^(3, 4)`)."""
    result = _TypeBuilder({}, True, True).tensor(t)
    for d in result.shape + ((result.vocab,) if result.vocab is not None else ()):
        if not isinstance(d, int) or d <= 0:
            raise _err("type", f"a value's sizes must be positive whole numbers, but {result} "
                       f"has {d}", t.span, "e.g. x: R^(3, 4) or t: Token[10]^5")
    return result


def _check(programs: list[ast.Program],
           expr: tuple[ast.Definition, ModSig] | None) -> T.TProgram:
    g = _Globals()
    errors: list[DpError] = []
    items = [item for p in programs for item in p.items]
    for item in items:
        try:
            _declare(item, g)
        except DpError as e:
            errors.append(e)
    if expr is not None:  # declared last, so no program can use it
        e_def, e_sig = expr
        g.sigs[e_def.name], g.defs[e_def.name], g.spans[e_def.name] = e_sig, e_def, e_def.span
    errors.extend(_module_argument_types(items, g))
    for name in g.sigs:
        try:
            g.sizes[name] = _size_args(name, g)
            g.reals[name] = _real_args(name, g)
        except DpError as e:
            errors.append(e)
    for name, d in g.defs.items():
        if name not in g.sigs and name not in g.spans:  # not a signature that failed
            errors.append(_err("type", f"{name} has a definition but no signature", d.span,
                               f"write its signature first, e.g. `{name}: R^n -> R^m`"))
    tdefs = {}
    for name, d in g.defs.items():
        if name not in g.sigs:
            continue
        try:
            tdefs[name] = _DefChecker(g, d).run(infer=expr is not None and d is expr[0])
        except DpErrors as e:
            errors.extend(e.errors)
        except DpError as e:
            errors.append(e)
    if expr is not None and expr[0].name in tdefs:
        g.sigs[expr[0].name] = tdefs[expr[0].name].sig
    errors.extend(module_graph_errors(tdefs))
    train, runs = _check_uses(programs, g, tdefs, errors)
    if errors:
        raise DpErrors(_once(errors))
    tprog = T.TProgram(tdefs, dict(g.abstracts), dict(g.sigs), train, runs,
                       {name: tuple(sizes) for name, sizes in g.sizes.items()})
    errors = instance_errors(tprog)
    if errors:
        raise DpErrors(_once(errors))
    return tprog


def _declare(item, g: _Globals) -> None:
    if isinstance(item, ast.AbstractDecl):
        _no_duplicate(item.name, item.span, g)
        g.abstracts[item.name] = _TypeBuilder({}, True, True).sig(item.sig)
        g.spans[item.name] = item.span
    elif isinstance(item, ast.Signature):
        _no_duplicate(item.name, item.span, g)
        g.spans[item.name] = item.span
        g.config[item.name] = item.config
        if isinstance(item.sig, ast.NamedSig):
            g.sigs[item.name] = g.abstract(item.sig.name, item.sig.span)
            g.implements[item.name] = item.sig.name
            return
        sig = _TypeBuilder({}, True, True).sig(item.sig)
        g.sigs[item.name] = sig
        if item.implements is not None:
            abstract = g.abstract(item.implements, item.span)
            if not sig_matches(sig, abstract):
                raise _err("type", f"{item.name} does not implement {item.implements}: "
                           f"its signature is {sig}, but {item.implements} is {abstract}",
                           item.span, f"{item.implements} is declared at "
                           f"{where(g.spans[item.implements])}")
            g.implements[item.name] = item.implements
    elif isinstance(item, ast.Definition):
        if item.name in g.defs:
            raise _err("name", f"{item.name} is defined twice", item.span,
                       f"the first definition is at {where(g.defs[item.name].span)}")
        if item.name in g.abstracts:
            raise _err("type", f"{item.name} is abstract and cannot have a definition",
                       item.span, "declare an implementation: `Impl: " + item.name + "`")
        g.defs[item.name] = item


def _no_duplicate(name: str, span: Span, g: _Globals) -> None:
    if name in g.sigs or name in g.abstracts:
        raise _err("name", f"{name} is declared twice", span,
                   f"the first declaration is at {where(g.spans[name])}")
    if name in BUILTINS:
        raise _err("name", f"{name} is a built-in function and cannot be redeclared", span)


def _module_argument_types(items, g: _Globals) -> list[DpError]:
    """An abstract name typing a module argument must exist, whether or not the module is used
    (its calls then skip the check, so the error is said once)."""
    errors = []
    for item in items:
        if isinstance(item, (ast.Signature, ast.Definition)):
            heads = item.config if isinstance(item, ast.Signature) else item.header
            for h in heads:
                try:
                    if isinstance(h.sig, ast.NamedSig):
                        g.abstract(h.sig.name, h.sig.span)
                except DpError as e:
                    errors.append(e)
    return errors


def _once(errors: list[DpError]) -> list[DpError]:
    """The errors in order, each said once (a definition and a declaration pass may agree)."""
    seen, out = set(), []
    for e in errors:
        key = (e.kind, e.message, e.span)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _check_uses(programs: list[ast.Program], g: _Globals, tdefs: dict[str, T.TDef],
                errors: list[DpError]):
    """Train and run blocks (check_blocks.py): the records of the user's program, the last.
    A module with a module argument that has no default cannot be trained or run by itself."""
    unbound = {}
    for name, t in tdefs.items():
        first = next((c.name for c in t.config if c.default is None), None)
        if first is not None:
            unbound[name] = first
    modules = Modules(dict(g.sigs), frozenset(g.defs), dict(g.abstracts), unbound)
    return check_blocks(programs, modules, errors)
