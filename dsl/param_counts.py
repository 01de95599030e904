"""Parameter counts from the checked definitions: a formula of a module's sizes
(`FeedForward: m * n + m`), each parameter's shape where the sizes are known, and how many
numbers one example's values take (`footprint`: whether `dp check` must count memory exactly).

The walk follows the module's calls as lowering inlines them (the same parameter paths, a
repeat's blocks one by one, a scan's cell once) but keeps sizes as dimensions: the signature's
names, its size arguments (`ff`, `k`: their names, not their defaults) and the calls' sizes in
terms of them. A formula is the sum over parameters of the product of their sizes, brought to
the normal form of `dims.simplify`: like terms collected, terms of higher degree first, and a
square written as a product (`4 * d * d`). A module argument with no default is bound only
where the module is used: its parameters are a term of their own, `parameters of f`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from . import typed as T
from .dims import Dim, DimExpr, DimVar, _from_poly, _poly, dim_from, free_vars, resolve


@dataclass(frozen=True)
class Unbound:
    """A module argument of the module counted that has no default (`f` of AddNorm)."""

    name: str


@dataclass
class Counts:
    params: dict = field(default_factory=dict)  # path -> (shape: tuple[Dim], times: Dim)
    opens: dict = field(default_factory=dict)  # module argument name -> times it is called
    values: Dim = 0  # numbers the primitives compute for one example

    def formula(self) -> Dim:
        """The number of parameters, leaving out the open module arguments'."""
        total: Dim = 0
        for shape, times in self.params.values():
            total = dim_from("+", total, _product((times,) + shape))
        return simplify(total)


def simplify(d: Dim) -> Dim:
    """dims.simplify, and a size divided by a size that multiplies it cancels: the checker
    made sure it divides (`heads * (d / heads)` is `d`)."""
    if isinstance(d, int):
        return d
    out: dict = {}
    todo = list(_poly(d).items())
    while todo:
        m, c = todo.pop()
        div = next((a for a in m if isinstance(a, DimExpr) and a.op == "/" and a.right in m),
                   None)
        if div is None:
            out[m] = out.get(m, 0) + c
            continue
        rest = list(m)
        rest.remove(div)
        rest.remove(div.right)
        todo += [(tuple(sorted(lm + tuple(rest), key=repr)), lc * c)
                 for lm, lc in _poly(div.left).items()]
    return _from_poly({m: c for m, c in out.items() if c})


def _product(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_from("*", out, d)
    return out


def counts(tprog: T.TProgram, name: str) -> Counts:
    """Every parameter of module `name`, by path, with its shape over the module's sizes."""
    tdef = tprog.defs[name]
    config = {c.name: c.default if c.default is not None else Unbound(c.name)
              for c in tdef.config}
    out = Counts()
    _walk(tprog, tdef, {}, config, name, 1, 1, out)
    return out


def formula_text(tprog: T.TProgram, name: str) -> str:
    """`4 * d * d + 2 * d * ff + ...`, with `+ parameters of f` for each open module argument."""
    c = counts(tprog, name)
    terms = [] if c.formula() == 0 and c.opens else [str(c.formula())]
    for arg, times in c.opens.items():
        times = simplify(times)
        terms.append(f"parameters of {arg}" if times == 1 else f"{times} × parameters of {arg}")
    return " + ".join(terms)


def formula_line(tprog: T.TProgram, name: str) -> str | None:
    """`parameters: m * n + m`, what `dp check` and the REPL say of a generic module; None when
    it says nothing: no parameters, or only those of one module argument (`parameters of f`)."""
    text = formula_text(tprog, name)
    known = text != "0" and not (text.startswith("parameters of ") and " + " not in text)
    return f"parameters: {text}" if known else None


def count_at(tprog: T.TProgram, name: str, sizes: dict[str, int]) -> int:
    """The formula at sizes given by name (`{"n": 64, "m": 10}`); a size argument not given
    takes its default."""
    c = counts(tprog, name)
    assert not c.opens, f"{name} has module arguments with no default: {sorted(c.opens)}"
    defaults = {var.name: d for _, var, d in tprog.defs[name].sizes if d is not None}
    value = resolve(c.formula(), {v: {**defaults, **sizes}[v.name]
                                  for v in free_vars(c.formula())})
    assert isinstance(value, int), f"{name}: {value} is not a number at {sizes}"
    return value


def concrete_counts(tprog: T.TProgram, name: str) -> dict[str, tuple[int, ...]] | None:
    """Each parameter's shape, when every size is a number (None otherwise): the parameters
    lowering allocates for the module as a model."""
    c = counts(tprog, name)
    if c.opens or not all(isinstance(d, int) for shape, times in c.params.values()
                          for d in shape + (times,)):
        return None
    return {path: shape for path, (shape, _) in c.params.items()}


def footprint(tprog: T.TProgram, name: str) -> int | None:
    """The numbers one example of module `name` holds: its inputs, its parameters and every
    value its primitives compute (a scan's per step, a repeat's per block); None when a size is
    not a number. Lowering makes a few primitives of some builtins, so it counts more, within a
    small factor (tests/test_param_counts.py holds the factor); memory.py counts exactly."""
    c = counts(tprog, name)
    sizes = [_product(t.shape) for t in tprog.defs[name].sig.args] + [c.values] + [
        _product((times,) + shape) for shape, times in c.params.values()]
    if c.opens or not all(isinstance(n, int) for n in sizes):
        return None
    return sum(sizes)


def _numbers(runs: Dim, t, size) -> Dim:
    return _product((runs,) + tuple(size(d) for d in t.shape))


def _made(e: T.TExpr) -> Iterator[T.TExpr]:
    """The expressions of a definition that compute a value there (its primitives); a call's
    values are its callee's."""
    for a in (e.seq, *e.extra) if isinstance(e, T.TMap) else getattr(e, "args", ()):
        yield from _made(a)
    if isinstance(e, T.TPrim):
        yield e


# --- the walk ---------------------------------------------------------------------------------
def sites(e: T.TExpr) -> Iterator[tuple[T.TCall, T.TMap | None]]:
    """Call sites in the order they run (arguments first), each with its map, scan or repeat,
    as lowering inlines them (`dp check`, `--summary` and `dp show` list them from here)."""
    if isinstance(e, T.TMap):
        yield from sites(e.seq)
        for a in e.extra:
            yield from sites(a)
        yield e.call, e
        return
    for a in getattr(e, "args", ()):
        yield from sites(a)
    if isinstance(e, T.TCall):
        yield e, None


def _walk(tprog: T.TProgram, tdef: T.TDef, dims: dict, config: dict, prefix: str, times: Dim,
          runs: Dim, out: Counts) -> None:
    """`times`: how many copies of its parameters there are; `runs`: how many times its body
    runs for one example (a scan's cell once per step)."""
    def size(d: Dim) -> Dim:
        return resolve(resolve(d, tdef.subst), dims)

    for p in tdef.params:
        path = f"{prefix}.{p.name}"
        out.params.setdefault(path, (tuple(size(d) for d in p.type.shape), times))
    for e in [*(e for _, e in tdef.lets), tdef.result]:
        for made in _made(e):
            out.values = dim_from("+", out.values, _numbers(runs, made.type, size))
        for call, wrap in sites(e):
            site = call.site if tdef.site_counts.get(call.site, 1) == 1 else \
                f"{call.site}{call.index}"
            count = size(wrap.count) if wrap is not None and wrap.kind == "repeat" else None
            steps = runs
            if wrap is not None and wrap.kind != "repeat":  # a map's or scan's steps
                steps = dim_from("*", runs, size(wrap.seq.type.shape[0]))
            if wrap is not None and wrap.kind == "scan":  # a zero state, steps on slices,
                for t in (call.type, wrap.seq.type, wrap.type):  # stacked
                    out.values = dim_from("+", out.values, _numbers(runs, t, size))
            if isinstance(count, int):
                for i in range(1, count + 1):
                    _call(tprog, tdef, dims, call, config, f"{prefix}.{site}{i}", times, steps,
                          out)
            elif count is not None:  # `layers` blocks alike: the first, counted `layers` times
                _call(tprog, tdef, dims, call, config, f"{prefix}.{site}1",
                      dim_from("*", times, count), dim_from("*", steps, count), out)
            else:
                _call(tprog, tdef, dims, call, config, f"{prefix}.{site}", times, steps, out)


def _ref(ref: T.ModRef, size, config: dict):
    """A module reference with the enclosing definition's names replaced by what they are."""
    if isinstance(ref, T.ConfigMod):
        return config.get(ref.name, Unbound(ref.name))
    if isinstance(ref, T.BuiltinMod):
        return ref
    return T.GlobalMod(ref.name, tuple((k, _ref(v, size, config)) for k, v in ref.config),
                       tuple((n, size(d)) for n, d in ref.dims))


def _call(tprog: T.TProgram, tdef: T.TDef, outer: dict, call: T.TCall, config: dict, path: str,
          times: Dim, runs: Dim, out: Counts) -> None:
    """One call site: the callee's parameters under `path`, its sizes in terms of the
    caller's (`outer`: the caller's own dimensions, which a module argument's result may fix)."""

    def size(d: Dim) -> Dim:
        return resolve(resolve(d, tdef.subst), outer)

    ref = _ref(call.callee, size, config)
    if call.elementwise:  # a function of numbers, once for each number of its result
        runs = _numbers(runs, call.type, size)
    if isinstance(ref, Unbound):
        out.opens[ref.name] = dim_from("+", out.opens.get(ref.name, 0), times)
        declared = next((c.sig for c in tdef.config if c.name == call.callee.name), None)
        declared = tprog.abstracts.get(declared) if isinstance(declared, str) else declared
        for d, named in zip(call.type.shape, declared.result.shape if declared else ()):
            mine = resolve(d, tdef.subst)  # a size only its result fixes keeps the name
            if isinstance(mine, DimVar) and not mine.rigid and mine not in outer:
                outer[mine] = resolve(named, outer)  # the declaration gives it (`e`)
        return
    if isinstance(ref, T.BuiltinMod) or ref.name not in tprog.defs:  # `act = relu`
        n = runs if call.elementwise else _numbers(runs, call.type, size)
        out.values = dim_from("+", out.values, n)
        return
    callee = tprog.defs[ref.name]
    inner = {c.name: c.default for c in callee.config if c.default is not None}
    inner.update({k: v for k, v in ref.config})
    if isinstance(call.callee, T.ConfigMod):
        dims = {} if call.elementwise else _bind(callee, ref, call, size)
        for d, got in zip(call.type.shape, callee.sig.result.shape):  # what only it fixes
            mine = resolve(d, tdef.subst)
            if isinstance(mine, DimVar) and not mine.rigid and mine not in outer:
                outer[mine] = resolve(got, dims)
    else:
        dims = {var: size(fv) for var, fv in call.dims}
    _walk(tprog, callee, dims, inner, path, times, runs, out)


def _bind(callee: T.TDef, ref: T.GlobalMod, call: T.TCall, size) -> dict:
    """The sizes of a module passed as an argument (frames.bind_dims on dimensions): the ones
    given with it, its defaults, what its arguments' types fix, then what its result does."""
    byname = {v.name: v for v in callee.sig.dims} | {n: var for n, var, _ in callee.sizes}
    dims = {var: default for _, var, default in callee.sizes if default is not None}
    dims.update({byname[n]: d for n, d in ref.dims if n in byname})
    pairs = []
    for want, arg in zip(callee.sig.args, call.args, strict=True):
        pairs += zip(want.shape, arg.type.shape)
        pairs.append((want.vocab, arg.type.vocab))
    pairs += zip(callee.sig.result.shape, call.type.shape)
    for d, got in pairs:
        if isinstance(d, DimVar) and d not in dims and got is not None:
            dims[d] = size(got)
    return dims
