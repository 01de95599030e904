"""Stage 2: ast.Program(s) -> typed.TProgram. Shapes, names and signatures, before anything runs.

Every definition is checked once, generically: its signature's dimension names are rigid, each
call site instantiates the callee's signature with fresh variables, and unification fixes them
from the arguments, the expected type (`(e : R^128)`, a typed let, the signature's result), an
explicit `m = 128`, or a later use. A fresh variable still open at the end of the definition is
"a dimension nothing fixes". Errors are collected per top-level item and raised together.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from . import ast
from . import typed as T
from .dims import Dim, DimVar, Mismatch, dim_from, fresh, resolve
from .errors import DpError, DpErrors, Span, where
from .types import ModSig, Tensor, scalar, unify_tensors

ELEMENTWISE = ("relu", "tanh", "sigmoid", "exp", "log", "sqrt", "abs", "gelu", "square")
LAST_AXIS = ("softmax", "log_softmax")
REDUCTIONS = ("sum", "mean", "max")
# builtins on volumes, with the size arguments each accepts (check_volumes.py has their rules)
VOLUME = {"conv2d": ("stride", "padding"), "maxpool2d": ("size", "stride"), "flatten": ()}
# builtins on sequences (check_sequences.py): map and scan take a module first
SEQUENCE = ("map", "scan", "token", "seq_mean", "seq_max", "seq_first", "seq_last")
# builtins of attention and transformers (check_attention.py)
ATTENTION = ("split_heads", "join_heads", "transpose", "causal", "normalize", "repeat")
BUILTINS = ELEMENTWISE + LAST_AXIS + REDUCTIONS + tuple(VOLUME) + SEQUENCE + ATTENTION
INITIALIZERS = {"glorot": 0, "zeros": 0, "ones": 0, "normal": 1, "uniform": 1, "fan_in": 0}


def _err(kind: str, msg: str, span: Span | None, *notes: str) -> DpError:
    return DpError(kind, msg, span, tuple(notes))


def _suggest(name: str, known) -> tuple[str, ...]:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return (f"did you mean '{close[0]}'?",) if close else ()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- signatures -------------------------------------------------------------------------------
class _TypeBuilder:
    """Turns type syntax into Tensor types; dimension names map to variables in `scope`."""

    def __init__(self, scope: dict[str, DimVar], create: bool, rigid: bool):
        self.scope, self.create, self.rigid = scope, create, rigid

    def dim(self, d: ast.DimAst) -> Dim:
        if isinstance(d, ast.DimNum):
            return d.value
        if isinstance(d, ast.DimName):
            if d.name not in self.scope:
                if not self.create:
                    raise _err("name", f"unknown dimension '{d.name}'", d.span,
                               "dimensions here must be named in the module's signature")
                self.scope[d.name] = fresh(d.name, self.rigid)
            return self.scope[d.name]
        try:
            return dim_from(d.op, self.dim(d.left), self.dim(d.right))
        except Mismatch as m:
            raise _err("shape", f"bad dimension: {m.reason}", d.span) from None

    def tensor(self, t) -> Tensor:
        if isinstance(t, ast.RealType):
            return scalar()
        if isinstance(t, ast.TokenType):
            return Tensor((), self.dim(t.vocab))
        if isinstance(t, ast.PowType):
            base = self.tensor(t.base)
            dims = tuple(self.dim(d) for d in t.dims)
            groups = (len(dims),) + (base.groups or ((len(base.shape),) if base.shape else ()))
            return Tensor(dims + base.shape, base.vocab, groups)
        raise _err("type", "a tuple type can only be the arguments of a signature", t.span)

    def sig(self, fn: ast.FnType) -> ModSig:
        arg_types = fn.arg.items if isinstance(fn.arg, ast.TupleType) else (fn.arg,)
        args = tuple(self.tensor(a) for a in arg_types)
        result = self.tensor(fn.result)
        return ModSig(args, result, tuple(self.scope.values()))


def instantiate(sig: ModSig) -> tuple[ModSig, dict]:
    """A copy of `sig` over fresh flexible variables (one use site)."""
    mapping = {v: fresh(v.name) for v in sig.dims}
    return sig.substitute(mapping), mapping


def sig_matches(impl: ModSig, abstract: ModSig) -> bool:
    """True when impl is abstract up to renaming its dimension variables one to one."""
    if len(impl.args) != len(abstract.args):
        return False
    inst, mapping = instantiate(abstract)
    s: dict = {}
    try:
        for a, b in zip(inst.args + (inst.result,), impl.args + (impl.result,), strict=True):
            s = unify_tensors(a, b, s)
    except Mismatch:
        return False
    images = [resolve(v, s) for v in mapping.values()]
    return all(isinstance(i, DimVar) for i in images) and len(set(images)) == len(images)


def sig_unifies(a: ModSig, b: ModSig) -> bool:
    """True when the two signatures have a common instance: a module passed for an argument
    typed `(R^d)^n -> (R^e)^n` may keep the width; lowering checks the sizes it is used at."""
    if len(a.args) != len(b.args):
        return False
    ia, _ = instantiate(a)
    ib, _ = instantiate(b)
    s: dict = {}
    try:
        for x, y in zip(ia.args + (ia.result,), ib.args + (ib.result,), strict=True):
            s = unify_tensors(x, y, s)
    except Mismatch:
        return False
    return True


# --- the program ------------------------------------------------------------------------------
@dataclass
class _Globals:
    sigs: dict = field(default_factory=dict)        # name -> ModSig
    implements: dict = field(default_factory=dict)  # name -> abstract name
    abstracts: dict = field(default_factory=dict)   # name -> ModSig
    defs: dict = field(default_factory=dict)        # name -> ast.Definition
    config: dict = field(default_factory=dict)     # name -> tuple[HeaderItem]
    sizes: dict = field(default_factory=dict)      # name -> {size argument: SizeArg}
    spans: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SizeArg:
    """A dimension given at the call (`Conv(x; k = 5)`): its variable and default, if any."""

    var: DimVar
    default: int | None
    span: Span


def _size_args(name: str, g: _Globals) -> dict[str, SizeArg]:
    """Configuration items with a whole-number default, or with neither a signature nor a
    default when the signature names them (`StridedConv(x; k, s, p)`), are sizes."""
    d = g.defs.get(name)
    items = list(g.config.get(name, ())) + ([h for h in d.header if h.config] if d else [])
    sig_vars = {v.name: v for v in g.sigs[name].dims}
    out = {}
    for h in items:
        bare = h.default is None and h.name in sig_vars
        if h.sig is not None or not (bare or isinstance(h.default, ast.Number)):
            continue
        default = None
        if h.default is not None:
            if not h.default.value.is_integer() or h.default.value <= 0:
                raise _err("type", f"the size {h.name} must default to a positive whole "
                           f"number, not {h.default.text}", h.default.span)
            default = int(h.default.value)
        out[h.name] = SizeArg(sig_vars.get(h.name) or fresh(h.name, True), default, h.span)
    return out


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
    for name in g.sigs:
        try:
            g.sizes[name] = _size_args(name, g)
        except DpError as e:
            errors.append(e)
    for name, d in g.defs.items():
        if name not in g.sigs:
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
    for item in items:
        if isinstance(item, (ast.TrainBlock, ast.RunBlock)):
            errors.extend(_check_uses(item, g))
    if errors:
        raise DpErrors(errors)
    return T.TProgram(tdefs, dict(g.abstracts), dict(g.sigs),
                      tuple(i for i in items if isinstance(i, ast.TrainBlock)),
                      tuple(i for i in items if isinstance(i, ast.RunBlock)),
                      {name: tuple(sizes) for name, sizes in g.sizes.items()})


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
            g.sigs[item.name] = _abstract(item.sig.name, item.sig.span, g)
            g.implements[item.name] = item.sig.name
            return
        sig = _TypeBuilder({}, True, True).sig(item.sig)
        g.sigs[item.name] = sig
        if item.implements is not None:
            abstract = _abstract(item.implements, item.span, g)
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


def _abstract(name: str, span: Span, g: _Globals) -> ModSig:
    if name not in g.abstracts:
        raise _err("name", f"unknown abstract module '{name}'", span,
                   *(_suggest(name, g.abstracts)
                     or ("the abstract modules: " + ", ".join(sorted(g.abstracts)),)))
    return g.abstracts[name]


def _check_uses(block, g: _Globals) -> list[DpError]:
    """Train and run blocks may only name modules that exist and are concrete."""
    errors = []
    exprs = [block.model] if isinstance(block, ast.TrainBlock) else [
        a for p in block.prints for e in p.exprs if isinstance(e, ast.Call) for a in e.args]
    for e in exprs:
        if isinstance(e, ast.Name) and e.name[:1].isupper():
            if e.name in g.abstracts:
                errors.append(_err("type", f"{e.name} is abstract: train an implementation of "
                                   "it", e.span))
            elif e.name not in g.defs:
                errors.append(_err("name", f"unknown module '{e.name}'", e.span,
                                   *_suggest(e.name, g.defs)))
    return errors


from .check_body import _DefChecker  # noqa: E402  (the per-definition pass)
