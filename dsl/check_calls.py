"""Stage 2, a definition's calls of modules: the module a name or a configuration argument
stands for, the configuration and sizes bound at a call, and the types a call site gives.

A mixin of the definition's checker (check_body.py), which owns the substitution these
methods extend; split from it so that each file reads in one sitting.
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .builtins import BUILTINS, check_call, value_sig
from .check_volumes import describe
from .dims import Mismatch, Why, fresh, resolve, unify
from .errors import plural, suggest, where
from .provenance import Source, ordinal
from .signatures import _err, _TypeBuilder, instantiate, sig_matches, sig_unifies
from .types import ModSig, Tensor, apply_subst, unify_tensors


class _Calls:
    """Calls, module references and configuration; the checker provides `g`, `config`,
    `subst`, `deferred`, `calls`, `late`, `site_counts`, `dim_scope`, `expr` and `_expect`."""

    def _config(self, d: ast.Definition) -> None:
        items = list(self.g.config.get(d.name, ())) + [h for h in d.header if h.config]
        for h in items:
            if h.name in self.sizes or h.name in self.reals:
                continue
            sig = None
            if isinstance(h.sig, ast.NamedSig):
                self.g.abstract(h.sig.name, h.sig.span)
                sig = h.sig.name
            elif isinstance(h.sig, ast.FnType):
                sig = _TypeBuilder({}, True, True).sig(h.sig)
            default = self.module_ref(h.default) if h.default is not None else None
            if default is not None and sig is not None:  # the default must fit, too
                self._check_binding(d.name, h, default, h.default.span)
            if sig is None and default is None:
                raise _err("type", f"configuration argument '{h.name}' needs a signature or a "
                           "default", h.span, f"e.g. `{h.name}: R -> R = relu` for a module, "
                           f"`{h.name} = 3` for a size")
            self.config[h.name] = T.TConfigParam(h.name, sig, default, h.span)

    # --- calls
    def module_ref(self, e: ast.Expr) -> T.ModRef:
        """A module given as a value: `relu`, `FeedForward(; act = tanh)`."""
        if isinstance(e, ast.Name):
            return self._ref(e.name, e.span, ())
        if isinstance(e, ast.Call) and not e.args:
            return self._ref(e.func, e.func_span, e.kwargs)
        raise _err("type", "expected a module here (a name like relu or FeedForward)",
                   e.span)

    def _ref(self, name: str, span, kwargs) -> T.ModRef:
        if name in self.config:
            return T.ConfigMod(name)
        if name in BUILTINS:
            value_sig(name, span)
            return T.BuiltinMod(name)
        if name in self.g.abstracts:
            raise _err("type", f"{name} is abstract: pass an implementation of it", span)
        if name in self.g.sigs:
            if name not in self.g.defs:
                raise _err("name", f"{name} has a signature but no definition", span,
                           f"define it: {name}(x) = ...")
            return T.GlobalMod(name, *self._bind_config(name, kwargs, span))
        known = set(self.config) | set(self.g.sigs) | set(BUILTINS)
        raise _err("name", f"unknown module '{name}'", span, *suggest(name, known))

    def _config_params(self, name: str) -> dict[str, object]:
        d = self.g.defs.get(name)
        items = list(self.g.config.get(name, ())) + ([h for h in d.header if h.config]
                                                     if d else [])
        sizes, reals = self.g.sizes.get(name, {}), self.g.reals.get(name, {})
        return {h.name: h for h in items if h.name not in sizes and h.name not in reals}

    def _bind_config(self, name: str, kwargs, span) -> tuple:
        params = self._config_params(name)
        dims = {v.name for v in self.g.sigs[name].dims} | set(self.g.sizes.get(name, {}))
        bound, sizes, reals = [], [], []
        for kw in kwargs:
            if kw.name in self.g.reals.get(name, {}):
                reals.append((kw.name, self.real_value(name, kw)))
                continue
            if kw.name in dims:
                zero = self._may_be_zero(name, kw.name)
                sizes.append((kw.name, self.dim_value(name, kw, zero)))
                continue
            if kw.name not in params:
                named = [*params, *self.g.reals.get(name, {})]
                raise _err("name", f"{name} has no argument '{kw.name}'", kw.span,
                           *(("its configuration arguments: " + ", ".join(named),)
                             if named else ()))
            ref = self.module_ref(kw.value)
            self._check_binding(name, params[kw.name], ref, kw.value.span)
            bound.append((kw.name, ref))
        given = {k for k, _ in bound}
        for pname, h in params.items():
            if pname not in given and h.default is None:
                raise _err("arity", f"{name} needs its configuration argument '{pname}'",
                           span, f"e.g. {name}(...; {pname} = ...)")
        return tuple(bound), tuple(sizes), tuple(reals)

    def _check_binding(self, owner: str, h: ast.HeaderItem, ref: T.ModRef, span) -> None:
        """A module passed for `h` has the signature it declares, or its default's."""
        got = self._ref_sig(ref)
        want = h.sig
        if isinstance(want, ast.NamedSig):
            if want.name not in self.g.abstracts:
                return  # the owner's declaration says so
            ok = isinstance(ref, T.GlobalMod) and (
                self.g.implements.get(ref.name) == want.name
                or sig_matches(got, self.g.abstracts[want.name]))
            if isinstance(ref, T.ConfigMod):
                ok = self.config[ref.name].sig == want.name
            if not ok:
                raise _err("type", f"{owner} needs {_article(want.name)} {want.name} for "
                           f"'{h.name}', but "
                           f"{ref.name} is {got}", span,
                           f"{want.name} is {self.g.abstracts[want.name]}")
            return
        need = _TypeBuilder({}, True, True).sig(want) if want is not None else None
        like = ""
        if need is None:
            need, like = self._default_sig(h), f" like its default {_default_name(h)}"
        if need is not None and not sig_unifies(got, need):
            raise _err("type", f"{owner} needs '{h.name}' to be {need}{like}, but "
                       f"{ref.name} is {got}", span,
                       *((f"{owner}'s '{h.name}' is declared at {where(h.span)}",)
                         if like and h.span else ()))

    def _default_sig(self, h: ast.HeaderItem) -> ModSig | None:
        """The signature of a configuration argument's default, when it names a module."""
        name = _default_name(h)
        if name in BUILTINS:
            return BUILTINS[name].value
        return self.g.sigs.get(name)

    def _ref_sig(self, ref: T.ModRef) -> ModSig:
        if isinstance(ref, T.BuiltinMod):
            return value_sig(ref.name, None)
        if isinstance(ref, T.GlobalMod):
            return self.g.sigs[ref.name]
        c = self.config[ref.name]
        if isinstance(c.sig, str):
            return self.g.abstracts[c.sig]
        if c.sig is not None:
            return c.sig
        return self._ref_sig(c.default)

    def call(self, name: str, span, args, kwargs, e) -> T.TExpr:
        if name in BUILTINS and name not in self.config:
            return check_call(self, BUILTINS[name], args, kwargs, e)
        ref = self._ref(name, span, kwargs)
        sig = self._ref_sig(ref)
        positional = list(args)
        if len(positional) != len(sig.args):
            raise _err("arity", f"{name} takes {plural(len(sig.args), 'argument')} "
                       f"({name}: {sig}), but {len(positional)} "
                       f"{'was' if len(positional) == 1 else 'were'} given", e.span)
        targs = tuple(self.expr(a) for a in positional)
        return self.apply(ref, name, sig, targs, positional, kwargs, e)

    def apply(self, ref: T.ModRef, name: str, sig: ModSig, targs, positional, kwargs,
              e) -> T.TCall:
        """One call site of a module on typed arguments (`positional` name them in messages)."""
        self._carries_only_in_scan(ref, targs, e)
        sizes = self.g.sizes.get(name, {}) if isinstance(ref, T.GlobalMod) else {}
        inst, mapping = instantiate(sig, {a.var for a in sizes.values() if a.zero}, name)
        if isinstance(ref, T.ConfigMod):
            self.late |= set(mapping.values())
        for n, a in sizes.items():
            mapping.setdefault(a.var, fresh(n, zero=a.zero, owner=name))
        for kw in kwargs:
            self._dim_kwarg(name, kw, mapping)
        self._size_defaults(name, sizes, mapping, {kw.name for kw in kwargs}, e)
        elementwise = (all(t.rank == 0 and t.vocab is None for t in inst.args)
                       and inst.result.rank == 0 and any(a.type.rank > 0 for a in targs))
        if elementwise:
            result = self._broadcast(name, targs, e)
        else:
            declared = self.g.spans.get(name)
            tail = (f"declared at {self._at(declared)} ({name}: {sig})" if declared
                    else f"({name}: {sig})")
            for i, (a, want, src) in enumerate(zip(targs, inst.args, positional, strict=True)):
                which = f"{name}'s {ordinal(i) + ' ' if len(targs) > 1 else ''}input"
                self.at_step("call", [name, f"{name}: {sig}"], targs, i)
                self._expect(a, want, src, lambda w: f"{name} expects {w} here",
                             source=Source(which, tail), use=f"its use as {which}")
            result = self._result(name, sig, inst, targs, positional, e)
        site = name.lower() if isinstance(ref, T.GlobalMod) else name
        index = self.site_counts.get(site, 0) + 1
        self.site_counts[site] = index
        call = T.TCall(ref, targs, result, e.span, site, index, tuple(mapping.items()),
                       elementwise)
        self.calls.append((call, sig))
        return call

    def _carries_only_in_scan(self, ref: T.ModRef, targs, e) -> None:
        """A module that carries values from one step to the next is a cell of a scan: its
        call must be the one `scan(cell, xs)` makes (its first argument is the state)."""
        d = self.g.defs.get(ref.name) if isinstance(ref, T.GlobalMod) else None
        carried = [s.name for s in d.body if isinstance(s, ast.Let) and s.carry] if d else []
        scanned = targs and isinstance(targs[0], T.TLocal) and targs[0].name == T.STATE
        if carried and not scanned:
            raise _err("type", f"{ref.name} carries {' and '.join(carried)} from one step to "
                       f"the next, so it runs along a sequence: scan({ref.name}, xs)", e.span)

    def _size_defaults(self, name: str, sizes: dict, mapping: dict, given: set, e) -> None:
        for n, a in sizes.items():
            if n in given:
                continue
            if a.default is not None:
                self.subst = unify(mapping[a.var], a.default, self.subst, self.deferred,
                                   why=Why(*(f"{name}'s default {n} = {a.default}",) * 2,
                                           a.span))
            else:
                raise _err("arity", f"{name} needs its size argument '{n}'", e.span,
                           f"e.g. {name}(...; {n} = 3)")

    def _result(self, name: str, sig: ModSig, inst: ModSig, targs, positional, e) -> Tensor:
        """The call's result type; a size that does not divide (`h / 2`, h = 7) fails here."""
        try:
            return apply_subst(inst.result, self.subst)
        except Mismatch as m:
            bad = next(d for d in inst.result.shape if _fails(d, self.subst))
            shown = " and ".join(f"{describe(a)}, which is {apply_subst(t.type, self.subst)}"
                                 for a, t in zip(positional, targs, strict=True))
            raise _err("shape", f"{name} cannot take {shown}: its result {sig.result} needs "
                       f"{bad}, and {m.reason}", e.span, f"{name}: {sig}") from None

    def dim_value(self, name: str, kw: ast.KwArg, zero: bool = False):
        """A size given at a call: a whole number or one of this definition's dimensions;
        with `zero`, a size that may be 0 (a padding)."""
        if (isinstance(kw.value, ast.Number) and kw.value.value.is_integer()
                and kw.value.value >= (0 if zero else 1)):
            return int(kw.value.value)
        if isinstance(kw.value, ast.Name) and kw.value.name in self.dim_scope:
            return self.dim_scope[kw.value.name]
        which = "a whole number, 0 or more," if zero else "a positive whole number"
        raise _err("type", f"the size {kw.name} of {name} must be {which} or a dimension name",
                   kw.value.span)

    def real_value(self, name: str, kw: ast.KwArg):
        """A real number given at a call: a number, or a real argument of this definition
        (passed on: its value is known where the definition is used)."""
        if isinstance(kw.value, ast.Number):
            return kw.value.value
        if isinstance(kw.value, ast.Name) and kw.value.name in self.reals:
            return T.RealArg(kw.value.name)
        mine = f" or a real argument of {self.d.name}" if self.reals else ""
        raise _err("type", f"{kw.name} of {name} must be a number{mine}", kw.value.span)

    def _may_be_zero(self, name: str, size: str) -> bool:
        a = self.g.sizes.get(name, {}).get(size)
        return a is not None and a.zero

    def _dim_kwarg(self, name: str, kw: ast.KwArg, mapping: dict) -> None:
        var = next((v for v in mapping if v.name == kw.name), None)
        if var is None:
            return
        value = self.dim_value(name, kw, self._may_be_zero(name, kw.name))
        given = "the size argument" + ("" if isinstance(value, int) else f" {kw.name} = {value}")
        try:
            self.subst = unify(mapping[var], value, self.subst, self.deferred,
                               why=Why(given, given, kw.span))
        except Mismatch as m:
            raise _err("shape", f"{name}: {kw.name} = {value} contradicts the arguments: "
                       f"{m.reason}", kw.span) from None

    def _broadcast(self, name: str, targs, e) -> Tensor:
        shaped = [a for a in targs if a.type.rank > 0]
        both = Why(*(f"{name} applied elementwise",) * 2, e.span)
        for a in shaped[1:]:
            try:
                self.subst = unify_tensors(shaped[0].type, a.type, self.subst, self.deferred,
                                           why=both)
            except Mismatch:
                raise _err("shape", f"{name} is applied elementwise, but its arguments have "
                           f"different shapes", e.span) from None
        return shaped[0].type


def _article(name: str) -> str:
    """`an RNN`, `an Encoder`, `a SequenceModel`: by the sound (an acronym is spelt out)."""
    spelt = name.isupper() and name[0] in "AEFHILMNORSX"
    return "an" if spelt or name[0] in "AEIOU" else "a"


def _default_name(h: ast.HeaderItem) -> str | None:
    d = h.default
    if isinstance(d, ast.Name):
        return d.name
    return d.func if isinstance(d, ast.Call) and not d.args else None


def _fails(d, s: dict) -> bool:
    try:
        resolve(d, s)
        return False
    except Mismatch:
        return True
