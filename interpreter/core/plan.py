"""The plan: a flat, single-assignment list of primitive calls on batched arrays (stage 3 output).

`Var`s have concrete shapes (the batch axis first when `batched`); `Const`s are literals.
`typecheck_plan` re-runs every primitive's shape rule; `format_plan` prints it (`--dump plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dp.dsl.errors import Span


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

    def new_var(self, shape: tuple[int, ...], batched: bool, dtype: str = "float32") -> Var:
        v = Var(self.next_id, tuple(int(s) for s in shape), batched, dtype)
        self.next_id += 1
        return v

    def add(self, prim: str, inputs: tuple[Atom, ...], out_shape: tuple[int, ...],
            batched: bool, span: Span | None, **params) -> Var:
        out = self.new_var(out_shape, batched)
        self.eqns.append(Eqn(prim, tuple(inputs), tuple(sorted(params.items())), out, span))
        return out


def _shape_of(a: Atom) -> tuple[int, ...]:
    return a.shape if isinstance(a, Var) else ()


def typecheck_plan(plan: Plan) -> None:
    """Every equation's output shape is what its primitive's shape rule says (tests, debug)."""
    from .primitives import PRIMITIVES

    for eqn in plan.eqns:
        want = PRIMITIVES[eqn.prim].shape(*[_shape_of(a) for a in eqn.inputs],
                                          **dict(eqn.params))
        if tuple(want) != eqn.out.shape:
            raise AssertionError(f"{eqn.prim}: plan says {eqn.out.shape}, rule says {want}")


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

