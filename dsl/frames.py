"""What an inlined definition sees, shared by the checker's instance pass (instances.py) and
lowering (interpreter/core/lower.py): its concrete sizes, its module arguments bound, the
sizes a call gives its callee or a module argument takes from the shapes it meets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import typed as T
from .dims import DimVar, Mismatch, resolve
from .errors import DpError, Span
from .signatures import unbound_error
from .types import Tensor, apply_subst


def model_signature(tprog: T.TProgram, name: str, span: Span | None):
    """The argument and result array shapes of a module that can be a model: no open
    dimensions, every module argument bound. Tokens are ids as arguments (`Token[V]^n`: n
    integers) and scores as results (n by V)."""
    sig = tprog.signatures[name]
    tdef = tprog.defs.get(name)
    for c in tdef.config if tdef is not None else ():
        if c.default is None:
            raise unbound_error(name, c.name, span)
    shapes = []
    for t in sig.args + (sig.result,):
        dims = t.shape + ((t.vocab,) if t.vocab is not None and t is sig.result else ())
        if not all(isinstance(d, int) for d in dims):
            raise DpError("shape", f"{name}: {sig} has open dimensions; a model to train or "
                          "run needs concrete sizes", span,
                          (f"write a module with a concrete signature that uses {name}",))
        shapes.append(tuple(dims))
    return shapes[:-1], shapes[-1], sig


@dataclass(frozen=True)
class Frame:
    """What one inlined definition sees: its sizes, configuration and parameter prefix.
    `values` maps its local names to what they are (lowering's Atoms, this pass's Vals)."""

    tdef: T.TDef
    dims: dict  # rigid DimVar -> int
    config: dict  # name -> ModRef (resolved: never a ConfigMod)
    prefix: str
    values: dict = field(default_factory=dict)
    reals: dict = field(default_factory=dict)  # its real arguments' values: name -> float

    def real(self, v) -> float:
        """A real number as written (a number or one of this definition's real arguments)."""
        return self.reals[v.name] if isinstance(v, T.RealArg) else float(v)

    def size(self, d) -> int:
        try:
            value = resolve(resolve(d, self.tdef.subst), self.dims)
        except Mismatch as m:
            raise DpError("shape", f"{self.tdef.name} cannot be used with these sizes: "
                          f"{m.reason}", self.tdef.span) from None
        if not isinstance(value, int):
            raise DpError("shape", f"the size {value} is not known when {self.tdef.name} is "
                          "used here", self.tdef.span)
        return value


def frame(tprog: T.TProgram, ref: T.GlobalMod, dims: dict, prefix: str) -> Frame:
    tdef = tprog.defs[ref.name]
    config = {c.name: c.default for c in tdef.config if c.default is not None}
    config.update(dict(ref.config))
    return Frame(tdef, dims, config, prefix, reals={**dict(tdef.reals), **dict(ref.reals)})


def resolve_ref(ref: T.ModRef, f: Frame) -> T.ModRef:
    """A module reference with its configuration names and sizes replaced by what they are."""
    if isinstance(ref, T.ConfigMod):
        return f.config[ref.name]
    if isinstance(ref, T.BuiltinMod):
        return ref
    return T.GlobalMod(ref.name, tuple((k, resolve_ref(v, f)) for k, v in ref.config),
                       tuple((n, f.size(d)) for n, d in ref.dims),
                       tuple((n, f.real(v)) for n, v in ref.reals))


def callee_dims(f: Frame, e: T.TCall) -> dict:
    """The sizes a call of a named module gives it."""
    return {var: f.size(fv) for var, fv in e.dims}


def bind_dims(tprog: T.TProgram, ref: T.GlobalMod, shapes, span, role: str = "",
              want: tuple = ()) -> dict:
    """The sizes of a module passed as an argument: the ones given with it, its defaults, what
    its arguments' concrete shapes fix (one example each: no batch axis), and then what the
    result the caller expects (`want`, None where open) fixes of the rest."""
    tdef = tprog.defs.get(ref.name)
    if tdef is None:
        return {}
    byname = {v.name: v for v in tdef.sig.dims}
    dims = {}
    for n, var, default in tdef.sizes:
        byname[n] = var
        if default is not None:
            dims[var] = default
    dims.update({byname[n]: v for n, v in ref.dims if n in byname})
    for t, shape in zip(tdef.sig.args, shapes, strict=True):
        if len(t.shape) != len(shape) or not all(
                _binds(d, size, dims) for d, size in zip(t.shape, shape, strict=True)):
            given = ", ".join(f"{n} = {v}" for n, v in ref.dims)
            raise DpError("shape", f"{role}{ref.name}: {tdef.sig}{', which' if role else ''} "
                          f"cannot take {Tensor(tuple(shape), None, t.groups)} here", span,
                          (f"it is given {given}",) if given else ())
    result = tdef.sig.result.shape
    if len(result) == len(want):
        for d, size in zip(result, want, strict=True):
            if isinstance(d, DimVar) and isinstance(size, int):
                dims.setdefault(d, size)
    return dims


def expected(f: Frame, e: T.TCall) -> tuple:
    """The result shape a call's type asks for, as far as the sizes known here fix it."""
    out = []
    for d in e.type.shape:
        try:
            r = resolve(resolve(d, f.tdef.subst), f.dims)
        except Mismatch:
            r = None
        out.append(r if isinstance(r, int) else None)
    return tuple(out)


def _binds(d, size: int, dims: dict) -> bool:
    """Whether dimension d of a signature can be `size`, binding it if it is a free name."""
    if isinstance(d, DimVar):
        dims.setdefault(d, size)
        return dims[d] == size
    return not isinstance(d, int) or d == size


def check_result(f: Frame, e: T.TCall, ref: T.ModRef, got: tuple) -> None:
    """A module argument must give what the definition it is passed to expects of it
    (`got`: one example's shape), and what it gives fixes the sizes only it can."""
    dims = e.type.shape + ((e.type.vocab,) if e.type.vocab is not None else ())  # scores
    try:
        want = [resolve(resolve(d, f.tdef.subst), f.dims) for d in dims]
    except Mismatch:
        want = None  # a size that does not divide: the definition's own use of it says so
    if want is not None and (len(got) != len(want) or any(
            isinstance(w, int) and w != g for w, g in zip(want, got, strict=True))):
        shown = apply_subst(apply_subst(e.type, f.tdef.subst), f.dims)
        raise DpError("shape", f"{f.tdef.name} needs its argument '{e.callee.name}' to give "
                      f"{shown} here, but {ref.name} gives {Tensor(tuple(got))}", e.span)
    for d, size in zip(e.type.shape, got):
        r = resolve(d, f.tdef.subst)
        if isinstance(r, DimVar) and r not in f.dims:
            f.dims[r] = size


def model_dims(tprog: T.TProgram, name: str) -> dict:
    """The sizes of a module run as the model: its size arguments' defaults (`Net(x; m = 8)`),
    as chosen in the program or from the command line."""
    return {var: d for _, var, d in tprog.defs[name].sizes if d is not None}
