"""The plan: a flat, single-assignment list of primitive calls on batched arrays (stage 3 output).

`Var`s have concrete shapes (the batch axis first when `batched`); `Const`s are literals.
`Plan.add` takes every output shape from the primitive's own shape rule, the one authority for
concrete shapes; `typecheck_plan` re-checks a whole plan (after lowering and after fusion, when
`CHECK_PLANS` is on: always in the tests, and under `dp --debug`); `format_plan` prints it
(`--dump plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dp.dsl.errors import Span

from .primitives import PRIMITIVES

# Re-check every plan after lowering and after each fusion pass (tests/conftest.py and
# `dp --debug` turn it on; off, a plan costs nothing more than building it).
CHECK_PLANS = False


class PlanError(Exception):
    """A plan that breaks its own rules: a bug in dp's lowering or fusion, never the user's."""


@dataclass(frozen=True, slots=True)
class Var:
    id: int
    shape: tuple[int, ...]
    batched: bool
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"v{self.id}"


@dataclass(frozen=True, slots=True)
class Const:
    value: float

    def __str__(self) -> str:
        return repr(self.value)


Atom = Var | Const


@dataclass(frozen=True, slots=True)
class Eqn:
    prim: str
    inputs: tuple[Atom, ...]
    params: tuple[tuple[str, object], ...]
    out: Var
    span: Span | None


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: its path (`Digits.feedforward1.W`), shape and initializer."""

    path: str
    shape: tuple[int, ...]
    init: str
    init_args: tuple[float, ...]
    span: Span | None


@dataclass
class Plan:
    inputs: list[Var] = field(default_factory=list)
    params: dict[str, Var] = field(default_factory=dict)  # path -> Var
    specs: dict[str, ParamSpec] = field(default_factory=dict)  # path -> spec
    eqns: list[Eqn] = field(default_factory=list)
    outputs: list[Var] = field(default_factory=list)
    next_id: int = 0
    # `previous` (a module's own output tokens, later by one) is one more input: its Var, the
    # vocabulary size and where the program names it
    previous: Var | None = None
    previous_vocab: int = 0
    previous_span: object = None
    # every inlined call: (its first Var id, the id after its last, the call's span, the
    # callee's name); a value made inside the standard library is reported at the user's call
    calls: list[tuple[int, int, Span, str]] = field(default_factory=list)

    def new_var(self, shape: tuple[int, ...], batched: bool, dtype: str = "float32") -> Var:
        v = Var(self.next_id, tuple(int(s) for s in shape), batched, dtype)
        self.next_id += 1
        return v

    def add(self, prim: str, inputs: tuple[Atom, ...], span: Span | None = None, *,
            batched: bool | None = None, **params) -> Var:
        """`prim(inputs; params)` as a new equation, its output shape from the primitive's rule.
        The output is batched when an input is, unless `batched` says otherwise (`fill` makes
        a batched value from none; a mean over the batch is none)."""
        inputs = tuple(inputs)
        if batched is None:
            batched = any(isinstance(a, Var) and a.batched for a in inputs)
        out = self.new_var(rule_shape(prim, inputs, params, span), batched)
        self.eqns.append(Eqn(prim, inputs, tuple(sorted(params.items())), out, span))
        return out


def _shape_of(a: Atom) -> tuple[int, ...]:
    return a.shape if isinstance(a, Var) else ()


def rule_shape(prim: str, inputs: tuple[Atom, ...], params: dict, span) -> tuple[int, ...]:
    """The output shape the primitive's shape rule gives; a rule that rejects its inputs here
    means dp built a wrong plan (the checker should have caught the program)."""
    shapes = [_shape_of(a) for a in inputs]
    if prim not in PRIMITIVES:
        raise PlanError(f"the plan calls {prim!r}, which is no primitive (at {_at(span)})")
    try:
        return tuple(int(n) for n in PRIMITIVES[prim].shape(*shapes, **params))
    except (ValueError, TypeError, IndexError) as exc:
        raise PlanError(f"lowering gave {prim} inputs of shapes "
                        f"{', '.join(str(list(s)) for s in shapes)} at {_at(span)}: {exc}") from exc


def _at(span) -> str:
    return f"{span.file}:{span.line}:{span.col}" if span is not None else "an unknown place"


def typecheck_plan(plan: Plan) -> None:
    """Every value is assigned once and defined before it is used, and every equation's output
    shape is what its primitive's shape rule says. Raises PlanError."""
    defined = {v.id: v for v in plan.inputs}
    for path, v in plan.params.items():
        if v.id in defined:
            raise PlanError(f"parameter {path} reuses {v}, which is already defined")
        defined[v.id] = v
    for eqn in plan.eqns:
        for a in eqn.inputs:
            if isinstance(a, Var) and defined.get(a.id) != a:
                how = (f"as {a!r}, defined as {defined[a.id]!r}" if a.id in defined else
                       "before it is defined")
                raise PlanError(f"{eqn.prim} at {_at(eqn.span)} uses {a} {how}")
        if eqn.out.id in defined:
            raise PlanError(f"{eqn.prim} at {_at(eqn.span)} assigns {eqn.out} a second time")
        want = rule_shape(eqn.prim, eqn.inputs, dict(eqn.params), eqn.span)
        if want != eqn.out.shape:
            raise PlanError(f"{eqn.prim} at {_at(eqn.span)}: the plan says {list(eqn.out.shape)},"
                            f" the rule says {list(want)}")
        defined[eqn.out.id] = eqn.out
    for v in plan.outputs:
        if defined.get(v.id) != v:
            raise PlanError(f"the plan's output {v} is not defined")


def check_plan(plan: Plan) -> None:
    """typecheck_plan, when CHECK_PLANS is on."""
    if CHECK_PLANS:
        typecheck_plan(plan)


def format_plan(plan: Plan) -> str:
    lines = ["inputs: " + ", ".join(f"{v}: {list(v.shape)}" for v in plan.inputs)]
    for path, v in plan.params.items():
        lines.append(f"param {v}: {list(v.shape)} = {path}")
    for e in plan.eqns:
        args = ", ".join(str(a) for a in e.inputs)
        extra = "".join(f", {k}={v}" for k, v in e.params)
        lines.append(f"{e.out}: {list(e.out.shape)} = {e.prim}({args}{extra})")
    lines.append("outputs: " + ", ".join(str(v) for v in plan.outputs))
    return "\n".join(lines)
