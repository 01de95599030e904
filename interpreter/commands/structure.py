"""The structure of a checked module: its call sites in the order they run, and what each one
is where it is used (sizes, configuration, parameter path).

`dp check` lists a module's sites, `dp check --summary` walks them down into the nested modules
and `dp show` draws them; all three take them from here. Sizes are numbers when the module's
signature is concrete and stay names (`d`, `heads`) in a generic one; parameter paths and
shapes are the ones lowering gives (dsl/param_counts.py, held equal by its tests), so none of
this needs NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp.dsl import typed as T
from dp.dsl.dims import DimVar, resolve
from dp.dsl.param_counts import concrete_counts, formula_line, sites
from dp.dsl.types import ModSig, Tensor


def module_sites(tdef: T.TDef) -> list[tuple[T.TCall, T.TMap | None]]:
    return [s for e in [*(e for _, e in tdef.lets), tdef.result] for s in sites(e)]


def site_name(tdef: T.TDef, call: T.TCall) -> str:
    """`feedforward` when it is the only call of its callee, else `feedforward2`."""
    return call.site if tdef.site_counts.get(call.site, 1) == 1 else f"{call.site}{call.index}"


def ref_text(ref: T.ModRef, size=lambda d: d) -> str:
    """A module reference as dp writes it: `Transformer(; layers = 2, mask = causal)`."""
    if not isinstance(ref, T.GlobalMod):
        return ref.name
    parts = [f"{n} = {size(d)}" for n, d in ref.dims]
    parts += [f"{k} = {ref_text(v, size)}" for k, v in ref.config]
    return f"{ref.name}(; {', '.join(parts)})" if parts else ref.name


def is_concrete(sig: ModSig) -> bool:
    return all(isinstance(d, int) for t in sig.args + (sig.result,)
               for d in t.shape + ((t.vocab,) if t.vocab is not None else ()))


def open_config(tdef: T.TDef) -> list[T.TConfigParam]:
    """The module arguments with no default: bound only where the module is used."""
    return [c for c in tdef.config if c.default is None]


def is_closed(tdef: T.TDef) -> bool:
    """Whether the module can be lowered on its own: concrete sizes, every argument bound."""
    return is_concrete(tdef.sig) and not open_config(tdef)


def open_sizes(tdef: T.TDef) -> list[str]:
    """What a generic module's parameter counts wait for: dimension names, module arguments."""
    known = {var for _, var, default in tdef.sizes if default is not None}
    return [v.name for v in tdef.sig.dims if v not in known] + [
        f"the module argument {c.name}" for c in open_config(tdef)]


def _defaults(tdef: T.TDef) -> dict:
    return {c.name: c.default for c in tdef.config if c.default is not None}


@dataclass
class Scope:
    """One definition where it is used: its sizes, configuration and parameter path.

    It mirrors lowering's frames on types instead of arrays, so that a generic module can be
    described with its dimension names where lowering would need numbers."""

    tdef: T.TDef
    dims: dict  # the definition's own dimension variables -> sizes (numbers or outer names)
    config: dict  # configuration name -> ModRef
    path: str  # `Digits.feedforward2`

    @classmethod
    def top(cls, tdef: T.TDef) -> "Scope":
        return cls(tdef, {}, _defaults(tdef), tdef.name)

    def size(self, d):
        return resolve(resolve(d, self.tdef.subst), self.dims)

    def type(self, t: Tensor) -> Tensor:
        vocab = None if t.vocab is None else self.size(t.vocab)
        return Tensor(tuple(self.size(d) for d in t.shape), vocab, t.groups)

    def ref(self, r: T.ModRef) -> T.ModRef:
        """`r` with configuration names replaced by what they are here (a name with no default
        in a generic module stays a ConfigMod)."""
        if isinstance(r, T.ConfigMod):
            return self.config.get(r.name, r)
        if isinstance(r, T.BuiltinMod):
            return r
        return T.GlobalMod(r.name, tuple((k, self.ref(v)) for k, v in r.config),
                           tuple((n, self.size(d)) for n, d in r.dims))

    def is_layer(self, call: T.TCall) -> bool:
        """A module with a body or parameters, not a builtin or a function applied elementwise."""
        return not call.elementwise and not isinstance(self.ref(call.callee), T.BuiltinMod)

    def signature(self, call: T.TCall) -> ModSig:
        """The callee's signature as instantiated at this site."""
        return ModSig(tuple(self.type(a.type) for a in call.args), self.type(call.type), ())

    def enter(self, tprog: T.TProgram, call: T.TCall, suffix: str = "") -> "Scope | None":
        """The callee's scope at this site (`suffix`: the instance of a repeat); None when
        there is nothing inside to see (a builtin, or a module argument not known here)."""
        ref = self.ref(call.callee)
        if not self.is_layer(call) or not isinstance(ref, T.GlobalMod) or (
                ref.name not in tprog.defs):
            return None
        tdef = tprog.defs[ref.name]
        path = f"{self.path}.{site_name(self.tdef, call)}{suffix}"
        config = {**_defaults(tdef), **dict(ref.config)}
        if not isinstance(call.callee, T.ConfigMod):
            return Scope(tdef, {var: self.size(fv) for var, fv in call.dims}, config, path)
        # a module argument: the sizes given with it, its defaults and what its arguments fix;
        # its result fixes what is still open here (as lowering does)
        byname = {v.name: v for v in tdef.sig.dims} | {n: var for n, var, _ in tdef.sizes}
        dims = {var: default for _, var, default in tdef.sizes if default is not None}
        dims.update({byname[n]: d for n, d in ref.dims if n in byname})
        for want, arg in zip(tdef.sig.args, call.args, strict=True):
            got = self.type(arg.type)
            pairs = list(zip(want.shape, got.shape)) + [(want.vocab, got.vocab)]
            dims.update({d: g for d, g in pairs if isinstance(d, DimVar) and d not in dims})
        scope = Scope(tdef, dims, config, path)
        for d, size in zip(call.type.shape, scope.type(tdef.sig.result).shape):
            r = resolve(d, self.tdef.subst)
            if isinstance(r, DimVar) and not r.rigid and r not in self.dims:
                self.dims[r] = size
        return scope


def param_counts(tprog: T.TProgram, tdef: T.TDef) -> dict[str, int] | None:
    """Parameter path -> number of values, as lowering allocates them; None when the module's
    sizes are not concrete (a generic module: counts need sizes)."""
    shapes = concrete_counts(tprog, tdef.name) if is_closed(tdef) else None
    return None if shapes is None else {path: math.prod(s) for path, s in shapes.items()}


def count_under(counts: dict[str, int], path: str) -> int:
    return sum(n for p, n in counts.items() if p.startswith(path + "."))


@dataclass(frozen=True)
class Layer:
    """One row of a summary: a call site, or one instance of a repeat."""

    name: str  # `feedforward2`, `prenormblock1`
    depth: int  # 0 for the module's own sites
    module: str  # `FeedForward`, `map LayerNorm`, `repeat layers × PreNormBlock`
    type: Tensor  # its output, for one example
    path: str  # its parameters' path prefix


def callee_text(scope: Scope, call: T.TCall) -> str:
    """What is called at a site: the module, or for a module argument not known here the
    abstract module it implements."""
    ref = scope.ref(call.callee)
    if isinstance(ref, T.ConfigMod):
        declared = next(c.sig for c in scope.tdef.config if c.name == ref.name)
        return declared if isinstance(declared, str) else "module argument"
    return ref.name


def layers(tprog: T.TProgram, scope: Scope, depth: int = 0) -> list[Layer]:
    """Every layer of a module and of the modules inside it, in the order they run."""
    out: list[Layer] = []
    for call, wrap in module_sites(scope.tdef):
        if not scope.is_layer(call):
            continue
        name = site_name(scope.tdef, call)
        callee = callee_text(scope, call)
        count = scope.size(wrap.count) if wrap is not None and wrap.kind == "repeat" else None
        if isinstance(count, int):
            instances = [(f"{name}{i}", callee, str(i)) for i in range(1, count + 1)]
        elif count is not None:
            instances = [(name, f"repeat {count} × {callee}", "1")]
        else:
            kind = f"{wrap.kind} " if wrap is not None else ""
            instances = [(name, kind + callee, "")]
        for shown, module, suffix in instances:
            inner = scope.enter(tprog, call, suffix)  # first: it may fix the result's sizes
            out.append(Layer(shown, depth, module, scope.type((wrap or call).type),
                             f"{scope.path}.{name}{suffix}"))
            if inner is not None:
                out.extend(layers(tprog, inner, depth + 1))
    return out


def describe_module(tprog: T.TProgram, tdef: T.TDef) -> list[str]:
    """What `dp check` (and the REPL, for a module's name) says of a module: its signature,
    each call site with its sizes and configuration, then its parameters."""
    lines = [f"{tdef.name}: {tdef.sig}" + (f"  (implements {tdef.implements})"
                                           if tdef.implements else "")]
    for c, _ in module_sites(tdef):
        if isinstance(c.callee, T.BuiltinMod) or c.elementwise:
            continue
        site = site_name(tdef, c)
        callee_sig = (tprog.signatures.get(c.callee.name) if isinstance(c.callee, T.GlobalMod)
                      else None)
        if callee_sig is None:
            declared = next((x.sig for x in tdef.config if x.name == c.callee.name), None)
            lines.append(f"  {site} = {c.callee.name}: {_config_sig(declared)}")
            continue
        given = {v.name: resolve(fv, tdef.subst) for v, fv in c.dims}
        sig = callee_sig.substitute({v: resolve(fv, tdef.subst) for v, fv in c.dims})
        parts = [f"{n} = {given[n]}" for n in tprog.sizes.get(c.callee.name, ())]
        parts += [f"{k} = {v.name}" for k, v in getattr(c.callee, "config", ())]
        parts += [f"{k} = {v.name if isinstance(v, T.RealArg) else f'{v:g}'}"
                  for k, v in getattr(c.callee, "reals", ())]  # dropout = 0.1
        config = "; " + ", ".join(parts) if parts else ""
        lines.append(f"  {site} = {c.callee.name}: {sig}{config}")
    shapes = concrete_counts(tprog, tdef.name) if is_closed(tdef) else None
    if shapes is not None:
        return lines + param_table(shapes)
    lines += [f"  module argument {c.name}: {_config_sig(c.sig)}, bound where {tdef.name} is "
              "used" for c in open_config(tdef)]
    lines += [f"  param {p.name}: {p.type} ~ {p.init}" for p in tdef.params]
    formula = formula_line(tprog, tdef.name)  # its count as a formula of its sizes
    return lines + ([f"  {formula}"] if formula else [])


def call_form(tdef: T.TDef) -> str:
    """How a module is called, with its configuration and defaults, as dp writes it:
    `Transformer(xs; layers = 2, heads = 4, ff = 256, dropout = 0.0, mask = identity)`. A
    size or module argument with no default must be given (`StridedConv(x; k, ...)`)."""
    parts = [n if d is None else f"{n} = {d}" for n, _, d in tdef.sizes]
    parts += [f"{n} = {float(v)!r}" for n, v in tdef.reals]
    parts += [f"{c.name} = {ref_text(c.default)}" if c.default is not None
              else f"{c.name}: {_config_sig(c.sig)}" for c in tdef.config]
    config = "; " + ", ".join(parts) if parts else ""
    return f"{tdef.name}({', '.join(tdef.inputs)}{config})"


def _config_sig(sig) -> str:
    return "any module" if sig is None else str(sig)


def param_table(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Each parameter's path, shape and count, and the total (dp check, the REPL's :params)."""
    width = max([len(p) for p in shapes] + [10])
    lines = [f"  {'parameter':<{width}}  {'shape':<14} {'count':>12}"]
    for path, shape in shapes.items():
        lines.append(f"  {path:<{width}}  {str(Tensor(shape)):<14} {math.prod(shape):>12,}")
    total = sum(math.prod(shape) for shape in shapes.values())
    return lines + [f"  {'total':<{width}}  {'':<14} {total:>12,}"]
