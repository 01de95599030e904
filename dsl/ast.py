"""Stage 1 output: the syntax tree of a .dp file, data only, every node with its source span.

Built by dsl/parser.py, read by dsl/checker.py. Spans are left out of equality so tests can
compare trees structurally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Span


def _sp():
    return field(compare=False, repr=False, default=None)


# --- dimensions (inside types) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DimNum:
    value: int
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class DimName:
    name: str
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class DimOp:
    op: str  # + - * /
    left: "DimAst"
    right: "DimAst"
    span: Span = _sp()


DimAst = Union[DimNum, DimName, DimOp]


# --- types ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RealType:
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class TokenType:
    vocab: DimAst
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class PowType:
    """`base^dims`: R^n, R^(c, h, w), (R^d)^n."""

    base: "TypeAst"
    dims: tuple[DimAst, ...]
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class TupleType:
    items: tuple["TypeAst", ...]
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class FnType:
    arg: "TypeAst"  # a TupleType means several arguments
    result: "TypeAst"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class NamedSig:
    """A signature given by the name of an abstract module (`cell: RNN`)."""

    name: str
    span: Span = _sp()


TypeAst = Union[RealType, TokenType, PowType, TupleType]
SigAst = Union[FnType, NamedSig]


# --- expressions ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Number:
    value: float
    text: str
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class KwArg:
    name: str
    value: "Expr"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Call:
    """`f(a, b; k = v)`: a module, builtin or data source applied to arguments."""

    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]
    span: Span = _sp()
    func_span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Apply:
    """Juxtaposition `W x`: a matrix or module applied to a value."""

    func: "Expr"
    arg: "Expr"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Index:
    """`E[t]`: the row of a matrix that a token selects (an embedding lookup)."""

    table: "Expr"
    index: "Expr"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # + - * / @, or a comparison > < >= <= (where's condition only)
    left: "Expr"
    right: "Expr"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Ascribe:
    """`(e : T)`: the expected type, which may fix dimensions nothing else fixes."""

    expr: "Expr"
    type: TypeAst
    span: Span = _sp()


Expr = Union[Number, String, Name, Call, Apply, Index, BinOp, Neg, Ascribe]


# --- module declarations ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HeaderItem:
    """One name in `F(x, y; act: R -> R = relu)`; after `;` it is a configuration argument."""

    name: str
    sig: SigAst | None
    default: Expr | None
    config: bool
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    config: tuple[HeaderItem, ...]
    sig: SigAst
    implements: str | None
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class AbstractDecl:
    name: str
    config: tuple[HeaderItem, ...]
    sig: FnType
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class ParamDecl:
    name: str
    type: TypeAst
    init: Expr
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class KernelDecl:
    """`kernel rnn_scan`: the fused kernel that runs a scan of this cell (dsl/kernels.py)."""

    name: str
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Let:
    """`x = e`, or `carry c: T = e`: c is then the value of the previous step of a scan (zero
    at the first) until this line, and the new value after it."""

    name: str
    type: TypeAst | None
    value: Expr
    span: Span = _sp()
    carry: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    expr: Expr
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    header: tuple[HeaderItem, ...]
    body: tuple[Union[ParamDecl, KernelDecl, Let, Result], ...]
    span: Span = _sp()


# --- training and running ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    value: Expr
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class TrainBlock:
    model: Expr
    data: Expr
    settings: tuple[Setting, ...]
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class Print:
    exprs: tuple[Expr, ...]
    span: Span = _sp()


@dataclass(frozen=True, slots=True)
class RunBlock:
    prints: tuple[Print, ...]
    span: Span = _sp()


Item = Union[Signature, AbstractDecl, Definition, TrainBlock, RunBlock]


@dataclass(frozen=True, slots=True)
class Program:
    file: str
    items: tuple[Item, ...]
