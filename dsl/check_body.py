"""Stage 2, one definition: the body of `F(x; act = relu) = ...` -> typed.TDef.

Keeps the substitution of this definition as it grows; everything else is immutable. The
calls of modules, their configuration and sizes are in check_calls.py (a mixin of this class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import ast
from . import typed as T
from .builtins import BUILTINS
from .check_calls import _Calls
from .check_sequences import index
from .check_volumes import describe
from .check_where import COMPARISONS
from .dims import Mismatch, Why, free_vars, resolve, settle, unify
from .errors import DpError, plural, suggest
from .kernels import SCAN_KERNELS, written_as
from .provenance import Source, at, dim_notes
from .signatures import INITIALIZERS, _err, _Globals, _TypeBuilder, expr_text
from .types import ModSig, Tensor, apply_subst, scalar, unify_tensors


@dataclass(frozen=True)
class Partial:
    """What a definition that does not check knew when a shape error stopped it, for `dp show`
    to draw it up to there (carried by that error as `partial`): `tdef` with the lets that
    checked (its result is the argument that does not fit), and the step that failed, drawn
    as `kind` (call, op, output) with `lines`, on its typed `args`, of which `bad` has the
    type `got` where `want` was expected."""

    tdef: T.TDef
    kind: str
    lines: tuple[str, ...]
    args: tuple[T.TExpr, ...]
    bad: int
    got: Tensor
    want: Tensor


class _DefChecker(_Calls):
    def __init__(self, g: _Globals, d: ast.Definition):
        self.g, self.d = g, d
        self.sig: ModSig = g.sigs[d.name]
        self.sizes = g.sizes.get(d.name, {})
        self.reals = g.reals.get(d.name, {})
        self.dim_scope = {v.name: v for v in self.sig.dims}
        self.dim_scope.update({n: a.var for n, a in self.sizes.items()})
        self.subst: dict = {}
        self.deferred: list = []
        self.locals: dict[str, Tensor] = {}
        self.let_values: dict[str, T.TExpr] = {}  # what each let holds: where sizes came from
        self.params: dict[str, T.TParamDecl] = {}
        self.config: dict[str, T.TConfigParam] = {}
        self.calls: list[tuple[T.TCall, ModSig]] = []
        self.late: set = set()  # sizes a module argument fixes when it is bound (lowering)
        self.site_counts: dict[str, int] = {}
        self.infer = False  # an expression of the REPL: its inputs are values, not a signature
        self.lets: list[tuple[str, T.TExpr]] = []  # those checked so far
        self.step: tuple | None = None  # the step being checked: (kind, lines, args, index)
        self.failed: tuple | None = None  # (step, got, want) of the shape error, if any

    # --- the definition
    def run(self, infer: bool = False) -> T.TDef:
        """The checked definition; with `infer`, its result type is its expression's (a REPL
        input), not the one its signature gave. A shape error at a step whose arguments are
        known carries the definition up to there (`Partial`)."""
        try:
            return self._run(infer)
        except DpError as err:
            if self.failed is not None and err.kind == "shape":
                err.partial = self._partial()
            raise

    def _partial(self) -> Partial:
        (kind, lines, args, bad), got, want = self.failed
        tdef = T.TDef(self.d.name, self.sig, self.d_input_names(), tuple(self.config.values()),
                      tuple(self.params.values()), tuple(self.lets), args[bad], self.subst,
                      dict(self.site_counts), self.g.implements.get(self.d.name), self.d.span,
                      tuple((n, a.var, a.default) for n, a in self.sizes.items()),
                      tuple((s.name, self.locals[s.name]) for s in self.d.body
                            if isinstance(s, ast.Let) and s.carry and s.name in self.locals),
                      reals=tuple(self.reals.items()))
        return Partial(tdef, kind, lines, args, bad, got, want)

    def at_step(self, kind: str, lines, args, index: int):
        """Mark the step being checked (for a Partial), then return its argument `index`."""
        self.step = (kind, tuple(lines), tuple(args), index)
        return args[index]

    def _run(self, infer: bool) -> T.TDef:
        d = self.d
        self.infer = infer
        inputs = [h for h in d.header if not h.config]
        self._config(d)
        if len(inputs) != len(self.sig.args):
            raise _err("arity", f"{d.name} takes {plural(len(self.sig.args), 'argument')} "
                       f"by its signature ({self.sig}), but its definition names "
                       f"{len(inputs)}", d.span)
        for h, t in zip(inputs, self.sig.args, strict=True):
            self.locals[h.name] = t
        for stmt in d.body:
            if isinstance(stmt, ast.ParamDecl):
                self._param(stmt)
        carries = [self._carry(s) for s in d.body if isinstance(s, ast.Let) and s.carry]
        lets, results = self.lets, [s for s in d.body if isinstance(s, ast.Result)]
        if len(results) != 1:
            span = results[1].span if results else d.span
            raise _err("syntax", f"{d.name} must end in exactly one result expression, "
                       f"found {len(results)}", span)
        for stmt in d.body:
            if isinstance(stmt, ast.Let):
                lets.append((stmt.name, self._let(stmt)))
        result = self.expr(results[0].expr)
        if infer:
            self._close()
            self.sig = ModSig(self.sig.args, apply_subst(result.type, self.subst), ())
        self.at_step("output", [f"output: {self.sig.result}"], [result], 0)
        self._expect(result, self.sig.result, results[0].expr,
                     f"{d.name} should give {self.sig.result} (its signature)",
                     source=Source(f"{d.name}'s result", self._declared(d.name)),
                     use=f"{d.name}'s result type")
        self._close()
        tdef = T.TDef(d.name, self.sig, tuple(h.name for h in inputs),
                      tuple(self.config.values()), tuple(self.params.values()), tuple(lets),
                      result, self.subst, dict(self.site_counts), self.g.implements.get(d.name),
                      d.span, tuple((n, a.var, a.default) for n, a in self.sizes.items()),
                      tuple(carries), reals=tuple(self.reals.items()))
        return self._kernel(tdef)

    def _kernel(self, tdef: T.TDef) -> T.TDef:
        """The kernel the definition declares, if any: a known one, once, on a recurrent cell
        written as the kernel computes."""
        decls = [s for s in self.d.body if isinstance(s, ast.KernelDecl)]
        if not decls:
            return tdef
        if len(decls) > 1:
            raise _err("name", f"{tdef.name} declares its kernel twice", decls[1].span,
                       f"it was declared {decls[0].name} at line {decls[0].span.line}")
        k = decls[0]
        if k.name not in SCAN_KERNELS:
            raise _err("name", f"unknown kernel '{k.name}'", k.span,
                       *suggest(k.name, SCAN_KERNELS),
                       "known kernels: " + ", ".join(sorted(SCAN_KERNELS)))
        sig = tdef.sig
        if not (len(sig.args) == 2 and sig.args[0].rank == sig.args[1].rank == 1
                and sig.result == sig.args[0] and sig.result.vocab is None
                and sig.args[1].vocab is None):
            raise _err("type", f"kernel {k.name} runs a recurrent cell along a sequence, so "
                       f"{tdef.name} should be (R^h, R^d) -> R^h, but it is {sig}", k.span)
        if not written_as(k.name, tdef):
            raise _err("type", f"{tdef.name} declares kernel {k.name}, but its body is not what "
                       f"{k.name} computes",
                       k.span, f"{k.name} computes {SCAN_KERNELS[k.name].form}")
        return replace(tdef, kernel=k.name)

    def _param(self, p: ast.ParamDecl) -> None:
        if p.name in self.params or p.name in self.locals:
            raise _err("name", f"'{p.name}' is declared twice in {self.d.name}", p.span)
        t = _TypeBuilder(self.dim_scope, False, True).tensor(p.type)
        init, args = self._init(p.init)
        self.params[p.name] = T.TParamDecl(p.name, t, init, args, p.span)

    def _init(self, e: ast.Expr) -> tuple[str, tuple[float, ...]]:
        name = e.name if isinstance(e, ast.Name) else e.func if isinstance(e, ast.Call) else None
        args = e.args if isinstance(e, ast.Call) else ()
        if name is None:
            raise _err("syntax", f"an initializer is a name or a call, like glorot or "
                       f"normal(0.02), but this is {expr_text(e)}", e.span,
                       "known initializers: " + ", ".join(sorted(INITIALIZERS)))
        if name not in INITIALIZERS:
            raise _err("name", f"unknown initializer '{name}'", e.span,
                       "known initializers: " + ", ".join(sorted(INITIALIZERS)))
        values = [_number(a) for a in args]
        if len(args) != INITIALIZERS[name] or None in values:
            raise _err("arity", f"initializer {name} takes "
                       f"{plural(INITIALIZERS[name], 'number')}", e.span)
        for a, v in zip(args, values, strict=True):  # normal's deviation, uniform's bound
            if not (math.isfinite(v) and v > 0):
                raise _err("value", f"initializer {name} takes a positive finite number (its "
                           f"{'standard deviation' if name == 'normal' else 'bound'}), but "
                           f"this is {expr_text(a)}", a.span, f"e.g. {name}(0.02)")
        return name, tuple(values)

    def _carry(self, stmt: ast.Let) -> tuple[str, Tensor]:
        """A carried value is known from the first line: there it is the previous step's."""
        if stmt.name in self.locals or stmt.name in self.params:
            raise _err("name", f"'{stmt.name}' is already defined in {self.d.name}", stmt.span)
        t = _TypeBuilder(self.dim_scope, False, True).tensor(stmt.type)
        self.locals[stmt.name] = t
        return stmt.name, t

    def _let(self, stmt: ast.Let) -> T.TExpr:
        if not stmt.carry and (stmt.name in self.locals or stmt.name in self.params):
            raise _err("name", f"'{stmt.name}' is already defined in {self.d.name}", stmt.span)
        value = self.expr(stmt.value)
        if stmt.type is not None:
            want = _TypeBuilder(self.dim_scope, False, True).tensor(stmt.type)
            self.at_step("op", [f"{stmt.name}: {want}"], [value], 0)
            self._expect(value, want, stmt.value, f"{stmt.name} is declared {want}",
                         use=f"the declared type of {stmt.name}")
        if not stmt.carry:
            self.locals[stmt.name] = value.type
            self.let_values[stmt.name] = value
        return value

    def _close(self) -> None:
        """Every call's dimensions must now be fixed by this definition's own dimensions, and
        every deferred constraint met."""
        try:
            self.subst = settle(self.subst, self.deferred)
        except Mismatch as m:
            raise self._conflict(m, None) from None
        late = {r for v in self.late for r in free_vars(resolve(v, self.subst))}
        for call, callee_sig in self.calls:
            for var, fv in call.dims:
                value = resolve(fv, self.subst)
                if any(not v.rigid and v not in late for v in free_vars(value)):
                    name = call.callee.name
                    raise _err("shape", f"nothing fixes the dimension {var.name} of "
                               f"{name}: {callee_sig}", call.span,
                               f"give the expected type, e.g. ({_src(call)} : "
                               f"{_example_type(callee_sig)}), or pass {var.name} = ...")
            _positive(call, callee_sig, self.subst)
        for p in self.deferred:  # open only in sizes a module argument fixes when it is bound
            a, b = resolve(p.a, self.subst), resolve(p.b, self.subst)
            m = Mismatch(f"nothing here fixes {a} = {b}, so they cannot be told equal")
            m.origin = p.origin
            raise self._conflict(m, None)

    # --- expressions
    def expr(self, e: ast.Expr) -> T.TExpr:
        if isinstance(e, ast.Number):
            return T.TConst(e.value, scalar(), e.span)
        if isinstance(e, ast.Name):
            return self._name(e)
        if isinstance(e, ast.Ascribe):
            value = self.expr(e.expr)
            want = _TypeBuilder(self.dim_scope, False, True).tensor(e.type)
            self.at_step("op", [f": {want}"], [value], 0)
            self._expect(value, want, e.expr, f"the expected type is {want}",
                         use="the expected type")
            return value
        if isinstance(e, ast.Neg):
            x = self.expr(e.operand)
            return T.TPrim("neg", (x,), x.type, e.span)
        if isinstance(e, ast.BinOp):
            if e.op in COMPARISONS:  # where's condition, which where_rule reads itself
                raise _err("type", "a comparison is a mask, not a value: only where(...) "
                           "takes it, as its condition", e.span,
                           f"e.g. where({expr_text(e)}, ..., ...)")
            a, b = self.expr(e.left), self.expr(e.right)
            if e.op == "@":
                return self._matmul(a, b, e)
            return self._elementwise(e.op, a, b, e)
        if isinstance(e, ast.Apply):
            if isinstance(e.func, ast.Name) and self._is_module(e.func.name) and (
                    e.func.name not in self.locals and e.func.name not in self.params):
                return self.call(e.func.name, e.func.span, (e.arg,), (), e)
            return self._matmul(self.expr(e.func), self.expr(e.arg), e)
        if isinstance(e, ast.Call):
            return self.call(e.func, e.func_span, e.args, e.kwargs, e)
        if isinstance(e, ast.Index):
            return index(self, e)
        if isinstance(e, ast.String):
            raise _err("type", "a string is not a value a module can compute with", e.span)
        raise _err("syntax", "unexpected expression", getattr(e, "span", None))

    def _name(self, e: ast.Name) -> T.TExpr:
        if e.name in self.locals:
            return T.TLocal(e.name, self.locals[e.name], e.span)
        if e.name in self.params:
            return T.TParam(e.name, self.params[e.name].type, e.span)
        if e.name == "previous":
            return self._previous(e)
        if e.name in self.dim_scope:  # a dimension as a number: `sqrt(e)`
            return T.TPrim("dim", (), scalar(), e.span, (("value", self.dim_scope[e.name]),))
        if e.name in self.reals:
            raise _err("type", f"{e.name} is a real argument of {self.d.name}: a number that "
                       f"is passed on by name, as in dropout(x; p = {e.name}), not a value",
                       e.span)
        if self._is_module(e.name):
            raise _err("type", f"{e.name} is a module; apply it to a value: {e.name}(x)",
                       e.span)
        known = set(self.locals) | set(self.params) | set(self.config) | set(self.g.defs)
        raise _err("name", f"unknown name '{e.name}'", e.span, *suggest(e.name, known))

    def _previous(self, e: ast.Name) -> T.TExpr:
        """`previous`: the module's own output tokens, each one position later (a start token,
        id 0, first): the true ones in training (teacher forcing), its own when it runs."""
        out = self.sig.result
        if out.vocab is None or out.rank != 1:
            raise _err("type", f"previous is the output tokens before each position, so it "
                       f"exists only in a module that gives a sequence of tokens, "
                       f"Token[V]^n; {self.d.name} gives {out}", e.span)
        return T.TPrim("previous", (), out, e.span)

    def _is_module(self, name: str) -> bool:
        return (name in self.config or name in self.g.sigs or name in BUILTINS
                or name in self.g.abstracts)

    def _expect(self, value: T.TExpr, want: Tensor, e: ast.Expr, why,
                note: str | None = None, source: Source | None = None,
                use: str = "what is expected of it") -> None:
        """value must have type want; `why` starts the message (a function of the expected
        type as then known, when it has open sizes), and `note` ends it. `source` says where
        `want` was written and `use` what it is, for the variables of the value it fixes."""
        origin = (value, want, e, why, note, source)
        fixing = Why(f"the type of {describe(e)}", use, e.span)
        try:
            self.subst = unify_tensors(value.type, want, self.subst, self.deferred, origin,
                                       fixing)
        except Mismatch as m:
            self._failed(m.origin in (None, origin), value.type, want, m.subst)
            raise self._conflict(m, origin) from None

    def _failed(self, here: bool, got: Tensor, want: Tensor, s) -> None:
        """Remember the step that failed, when the error is said at it (not at a deferred
        constraint made earlier)."""
        if here and self.step is not None:
            s = s if s is not None else self.subst
            self.failed = (self.step, apply_subst(got, s), apply_subst(want, s))

    def _conflict(self, m: Mismatch, origin) -> DpError:
        """The error for a failed constraint, where it was made: a deferred one fails at the
        value it was deferred from, shown with the sizes known when it failed, and where each
        size of it came from."""
        s = m.subst if m.subst is not None else self.subst
        value, want, e, why, note, source = m.origin or origin or (None,) * 6
        if value is None:
            return _err("shape", f"the sizes of {self.d.name} cannot be matched: {m.reason}",
                        self.d.span)
        got, want = apply_subst(value.type, s), apply_subst(want, s)
        text = why(want) if callable(why) else why
        notes = _axis_note(got, want) + (() if m.plain else (m.reason,))
        if m.pair is not None:
            deep = self._deep(value, m.pair[0], m.axis)
            notes += tuple(dim_notes([(deep, self._source(value, e), m.axis, got.rank),
                                      (m.pair[1], source, m.axis, want.rank)],
                                     s, self.d.name, self.d.span.file))
        err = _err("shape", f"{text}, but {describe(e)} is {got}{_flat_sum(value, self)}",
                   e.span, *notes, *((note,) if note else ()))
        return err

    # --- where sizes came from (provenance.py)
    def _at(self, span) -> str:
        return at(span, self.d.span.file)

    def _declared(self, name: str) -> str:
        """`declared at line 2 (Small: R^32 -> R^10)`, for a module's signature."""
        span = self.g.spans.get(name)
        sig = self.sig if name == self.d.name else self.g.sigs.get(name)
        return f"declared at {self._at(span)} ({name}: {sig})" if span else ""

    def _source(self, value: T.TExpr, e) -> Source | None:
        """Where the type of a value was written (its sizes, before any variable in it was
        fixed): a signature, a parameter's declaration, a module's result."""
        origin = self._origin(value)
        return Source(describe(e), f"from {origin}") if origin else None

    def _origin(self, value: T.TExpr, depth: int = 0) -> str | None:
        if isinstance(value, T.TLocal) and value.name in self.let_values and depth < 8:
            return self._origin(self.let_values[value.name], depth + 1)
        if isinstance(value, T.TLocal) and value.name in self.d_inputs() and not self.infer:
            sig_span = self.g.spans.get(self.d.name, self.d.span)
            return f"the type of {self.d.name} at {self._at(sig_span)} ({self.d.name}: {self.sig})"
        if isinstance(value, T.TParam):
            p = self.params[value.name]
            return f"its declaration at {self._at(p.span)} (param {p.name}: {p.type})"
        if isinstance(value, T.TCall):
            name = value.callee.name
            declared = self._declared(name) if name in self.g.sigs else ""
            return f"{name}'s result" + (f", {declared}" if declared else
                                         f" at {self._at(value.span)}")
        if isinstance(value, T.TMap):  # the sizes of its steps are its module's result's
            inner = self._origin(value.call, depth + 1)
            return f"{inner}, each step of the {value.kind} at {self._at(value.span)}" if (
                inner) else None
        return None  # a builtin's result: the message shows what it computed

    def _sides(self, m: Mismatch, a: T.TExpr, ea, b: T.TExpr, eb,
               axis_b: int | None = None) -> list[str]:
        """Where the two failing sizes of an operation on values a and b came from."""
        if m.pair is None or m.origin is not None:
            return []
        s = m.subst if m.subst is not None else self.subst
        axis_b = m.axis if axis_b is None else axis_b
        return dim_notes([(self._deep(a, m.pair[0], m.axis), self._source(a, ea), m.axis,
                           a.type.rank),
                          (self._deep(b, m.pair[1], axis_b), self._source(b, eb),
                           axis_b, b.type.rank)],
                         s, self.d.name, self.d.span.file)

    def _deep(self, value: T.TExpr, d, axis: int | None):
        """The size `d` at `axis` of a module's result, as the callee's signature writes it over
        the call's own variables (`Linear's m`), so that a note can say what fixed them even
        when the call's type was already a number."""
        while isinstance(value, T.TLocal) and value.name in self.let_values:
            value = self.let_values[value.name]
        shift = 0
        if isinstance(value, T.TMap) and value.kind in ("map", "scan"):
            value, shift = value.call, 1
        if not isinstance(value, T.TCall) or value.elementwise or axis is None:
            return d
        result = self._ref_sig(value.callee).result
        if not 0 <= axis - shift < result.rank:
            return d
        return resolve(result.shape[axis - shift], dict(value.dims))

    def d_inputs(self) -> set[str]:
        return set(self.d_input_names())

    def d_input_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.d.header if not h.config)

    def _elementwise(self, op: str, a: T.TExpr, b: T.TExpr, e: ast.BinOp) -> T.TExpr:
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[op]
        if a.type.rank == 0 and b.type.rank > 0:
            return T.TPrim(name, (a, b), b.type, e.span)
        if b.type.rank == 0:
            return T.TPrim(name, (a, b), a.type, e.span)
        both = Why(*(f"{expr_text(e)}",) * 2, e.span)
        try:
            self.subst = unify_tensors(a.type, b.type, self.subst, self.deferred, why=both)
        except Mismatch as m:
            ta, tb = apply_subst(a.type, self.subst), apply_subst(b.type, self.subst)
            self.at_step("op", [op], [a, b], 1)
            self._failed(True, tb, ta, None)
            word = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}[op]
            raise _err("shape", f"cannot {word} {ta} and {tb}: the shapes differ", e.span,
                       "elementwise arithmetic needs equal shapes or a scalar",
                       *self._sides(m, a, e.left, b, e.right)) from None
        return T.TPrim(name, (a, b), a.type, e.span)

    def _matmul(self, a: T.TExpr, b: T.TExpr, e) -> T.TExpr:
        """Vectors and matrices, and stacks of matrices with the same leading axes (heads)."""
        ta, tb = apply_subst(a.type, self.subst), apply_subst(b.type, self.subst)
        if ta.rank == 0 or tb.rank == 0 or (max(ta.rank, tb.rank) > 2 and ta.rank != tb.rank):
            raise _err("shape", f"matmul needs vectors, matrices or stacks of matrices of "
                       f"one rank, but got {ta} @ {tb}", e.span)
        inner_a, inner_b = ta.shape[-1], tb.shape[0 if tb.rank == 1 else -2]
        both = Why(*(f"the product {expr_text(e)}",) * 2, e.span)
        try:
            for x, y in zip(ta.shape[:-2], tb.shape[:-2], strict=True):
                self.subst = unify(x, y, self.subst, self.deferred, why=both)
        except Mismatch:
            raise _err("shape", f"matmul: the stacks differ: {describe(_left(e))} is {ta}, "
                       f"{describe(_right(e))} is {tb}", e.span) from None
        axis_b = 0 if tb.rank == 1 else tb.rank - 2
        try:
            self.subst = unify(a.type.shape[-1], b.type.shape[axis_b], self.subst,
                               self.deferred, why=both)
        except Mismatch as m:
            ta, tb = apply_subst(ta, self.subst), apply_subst(tb, self.subst)
            m.axis = ta.rank - 1
            self.at_step("op", ["@"], [a, b], 1)
            fits = tb.shape[:axis_b] + (ta.shape[-1],) + tb.shape[axis_b + 1:]
            self._failed(True, tb, Tensor(fits, tb.vocab, tb.groups), None)
            notes = self._sides(m, a, _left(e), b, _right(e), axis_b)
            raise _err("shape", f"matmul: inner dimensions differ: {describe(_left(e))} is "
                       f"{ta}, {describe(_right(e))} is {tb} ({inner_a} != "
                       f"{inner_b})", e.span, *notes) from None
        if ta.rank <= 2 and tb.rank <= 2:
            shape = ta.shape[:-1] + tb.shape[1:]
        else:
            shape = ta.shape[:-1] + tb.shape[-1:]
        return T.TPrim("matmul", (a, b), Tensor(shape), e.span)


# --- small helpers ----------------------------------------------------------------------------
_AXES = ("channels", "height", "width")


def _positive(call: T.TCall, sig: ModSig, s: dict) -> None:
    """A call whose sizes or result come out as zero or less (a pooling window larger than
    the input, through a generic module) cannot be lowered: say so here."""
    try:
        result = apply_subst(call.type, s)
        sizes = [(v.name, resolve(fv, s), fv.zero) for v, fv in call.dims]
    except Mismatch:
        return  # a size that does not divide: said where the call is checked
    given = [f"{n} = {d}" for n, d, zero in sizes if isinstance(d, int) and d < (0 if zero else 1)]
    if given or any(isinstance(d, int) and d <= 0 for d in result.shape):
        raise _err("shape", f"{call.callee.name} cannot be used here: it would give {result}"
                   f"{' with ' + given[0] if given else ''}, but every size must be at least 1",
                   call.span, f"{call.callee.name}: {sig}")


def _flat_sum(value: T.TExpr, c) -> str:
    """` (16*4*4 = 256)` after a flattened volume's size, so a wrong size is easy to trace."""
    if not (isinstance(value, T.TPrim) and value.op == "flatten"):
        return ""
    dims = apply_subst(value.args[0].type, c.subst).shape
    if len(dims) < 2 or not all(isinstance(d, int) for d in dims):
        return ""
    return f" ({'*'.join(str(d) for d in dims)} = {value.type.shape[0]})"


def _number(e: ast.Expr) -> float | None:
    """A number as written, a minus sign in front of it included; None for anything else."""
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.Neg) and isinstance(e.operand, ast.Number):
        return -e.operand.value
    return None


def _axis_note(got: Tensor, want: Tensor) -> tuple[str, ...]:
    """Name the one axis of a volume that differs, or suggest flattening a volume for a vector."""
    if got.rank > 1 and want.rank == 1 and got.vocab is None:
        return ("a vector is expected: flatten the value first, e.g. flatten(x)",)
    if got.rank == 1 and want.rank == 0 and got.vocab is None and want.vocab is None:
        return ("one number from a vector is a score: w h + b with param w: R^n (a dot "
                "product), or sum(...)",)
    if got.rank != 3 or want.rank != 3:
        return ()
    differ = [i for i in range(3) if isinstance(got.shape[i], int)
              and isinstance(want.shape[i], int) and got.shape[i] != want.shape[i]]
    if len(differ) != 1:
        return ()
    i = differ[0]
    return (f"the {_AXES[i]} differ: {got.shape[i]} here, {want.shape[i]} expected",)


def _left(e):
    return e.func if isinstance(e, ast.Apply) else e.left


def _right(e):
    return e.arg if isinstance(e, ast.Apply) else e.right


def _src(call: T.TCall) -> str:
    return f"{call.callee.name}(...)"


def _example_type(sig: ModSig) -> str:
    return str(sig.result)
