"""What the checker's passes share: the initializers, turning type syntax into types, and
matching signatures. Split from checker.py so that the per-definition pass (check_body.py) and
the builtin rules (check_volumes.py, check_sequences.py, check_attention.py, whose records are
in builtins.py) import it without importing the checker that drives them."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from .dims import Dim, DimVar, Mismatch, dim_from, fresh, resolve
from .errors import DpError, Span, suggest
from .types import ModSig, Tensor, scalar, unify_tensors

INITIALIZERS = {"glorot": 0, "zeros": 0, "ones": 0, "normal": 1, "uniform": 1, "fan_in": 0}


def _err(kind: str, msg: str, span: Span | None, *notes: str) -> DpError:
    return DpError(kind, msg, span, tuple(notes))


def unbound_error(name: str, arg: str, span: Span | None) -> DpError:
    """A module with a module argument that has no default, named to be trained or run."""
    return _err("arity", f"{name} needs its configuration argument '{arg}' bound to train or run "
                f"it: write a module that uses {name}(...; {arg} = ...)", span)


def expr_text(e: ast.Expr, limit: int = 40, named: str = "; ") -> str:
    """An expression as the language writes it (standard spacing, parentheses where nested),
    for messages: never the syntax tree's repr. Longer than `limit`: its start and `...`.
    `named` goes between a call's positional and named arguments (`f(x; k = 1)`; a block's
    data sources are written `text(t, split = test)`)."""
    text = _text(e, 6, named)
    return text if len(text) <= limit else text[:limit - 4].rstrip() + " ..."


def _text(e, depth: int, named: str) -> str:
    """Nested deeper than `depth`: `...` (an expression may be nested a thousand deep)."""
    if depth < 0:
        return "..."
    d = depth - 1
    if isinstance(e, ast.Number):
        return e.text
    if isinstance(e, ast.String):
        return f'"{e.value}"'
    if isinstance(e, ast.Name):
        return e.name
    if isinstance(e, ast.Neg):
        return "-" + _inner(e.operand, d, named)
    if isinstance(e, ast.BinOp):
        return f"{_inner(e.left, d, named)} {e.op} {_inner(e.right, d, named)}"
    if isinstance(e, ast.Apply):
        return f"{_inner(e.func, d, named)} {_inner(e.arg, d, named)}"
    if isinstance(e, ast.Index):
        return f"{_inner(e.table, d, named)}[{_text(e.index, d, named)}]"
    if isinstance(e, ast.Ascribe):
        return f"({_text(e.expr, d, named)} : ...)"
    if isinstance(e, ast.Call):
        inside = ", ".join(_text(a, d, named) for a in e.args)
        if e.kwargs:  # `f(x; k = 1)`, but `f(k = 1)` when there is nothing before them
            inside += (named if e.args else "") + ", ".join(
                f"{k.name} = {_text(k.value, d, named)}" for k in e.kwargs)
        return f"{e.func}({inside})"
    return "an expression"


def _inner(e, depth: int, named: str) -> str:
    """An operand: in parentheses when it is an operation itself."""
    text = _text(e, depth, named)
    parts = isinstance(e, (ast.BinOp, ast.Apply, ast.Neg)) and text != "..."
    return f"({text})" if parts else text


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
            for d, size in zip(t.dims, dims, strict=True):
                if isinstance(size, int) and size <= 0:
                    raise _err("shape", f"a size must be at least 1, but this one is {size}",
                               d.span)
            groups = (len(dims),) + (base.groups or ((len(base.shape),) if base.shape else ()))
            return Tensor(dims + base.shape, base.vocab, groups)
        raise _err("type", "a tuple type can only be the arguments of a signature", t.span)

    def sig(self, fn: ast.FnType) -> ModSig:
        arg_types = fn.arg.items if isinstance(fn.arg, ast.TupleType) else (fn.arg,)
        args = tuple(self.tensor(a) for a in arg_types)
        result = self.tensor(fn.result)
        return ModSig(args, result, tuple(self.scope.values()))


def instantiate(sig: ModSig, zero=frozenset(), owner: str = "") -> tuple[ModSig, dict]:
    """A copy of `sig` over fresh flexible variables (one use site of `owner`, the callee
    they are named after in messages); those of `zero` may be 0 (a padding)."""
    mapping = {v: fresh(v.name, zero=v in zero, owner=owner) for v in sig.dims}
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
    typed `(R^d)^n -> (R^e)^n` may keep the width; lowering checks the sizes it is used at.
    An elementwise function, `R -> R`, fits any signature that keeps its argument's shape."""
    if len(a.args) != len(b.args):
        return False
    if _is_scalar_fn(a) and _keeps_shape(b):
        return True
    ia, _ = instantiate(a)
    ib, _ = instantiate(b)
    s: dict = {}
    try:
        for x, y in zip(ia.args + (ia.result,), ib.args + (ib.result,), strict=True):
            s = unify_tensors(x, y, s)
    except Mismatch:
        return False
    return True


def _is_scalar_fn(sig: ModSig) -> bool:
    return len(sig.args) == 1 and sig.args[0] == scalar() and sig.result == scalar()


def _keeps_shape(sig: ModSig) -> bool:
    """`T -> T` on real values: what an elementwise function gives on any T."""
    (arg,) = sig.args
    if arg.vocab is not None or sig.result.vocab is not None:
        return False
    inst, _ = instantiate(ModSig((arg,), sig.result, sig.dims))
    try:
        unify_tensors(inst.args[0], inst.result, {})
    except Mismatch:
        return False
    return True


@dataclass
class _Globals:
    sigs: dict = field(default_factory=dict)        # name -> ModSig
    implements: dict = field(default_factory=dict)  # name -> abstract name
    abstracts: dict = field(default_factory=dict)   # name -> ModSig
    defs: dict = field(default_factory=dict)        # name -> ast.Definition
    config: dict = field(default_factory=dict)     # name -> tuple[HeaderItem]
    sizes: dict = field(default_factory=dict)      # name -> {size argument: SizeArg}
    reals: dict = field(default_factory=dict)      # name -> {real argument: its default}
    spans: dict = field(default_factory=dict)

    def abstract(self, name: str, span: Span | None) -> ModSig:
        """The abstract module `name`; an error at `span` if there is none."""
        if name not in self.abstracts:
            raise _err("name", f"unknown abstract module '{name}'", span,
                       *(suggest(name, self.abstracts)
                         or ("the abstract modules: " + ", ".join(sorted(self.abstracts)),)))
        return self.abstracts[name]


@dataclass(frozen=True)
class SizeArg:
    """A dimension given at the call (`Conv(x; k = 5)`): its variable and default, if any."""

    var: DimVar
    default: int | None
    span: Span
    zero: bool = False  # it defaults to 0 (a padding), so it may be 0
