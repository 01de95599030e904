"""Stage 2 output: the checked program. Every expression carries its type (of one example).

Types inside a definition may mention the fresh dimension variables of its call sites; the
definition's `subst` resolves them to expressions over its own signature variables, so
lowering only has to evaluate them with concrete sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .errors import Span
from .types import ModSig, Tensor


# --- references to modules ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GlobalMod:
    """A defined module, with its configuration arguments bound (`FeedForward; act = tanh`)."""

    name: str
    config: tuple[tuple[str, "ModRef"], ...] = ()
    dims: tuple[tuple[str, object], ...] = ()  # sizes given with it: `SequenceRNN(; h = 128)`
    reals: tuple[tuple[str, object], ...] = ()  # real numbers given with it: `dropout = 0.1`


@dataclass(frozen=True, slots=True)
class RealArg:
    """A real configuration argument of the enclosing definition (`dropout`), passed on: a
    number known where the definition is used."""

    name: str


@dataclass(frozen=True, slots=True)
class ConfigMod:
    """A configuration argument of the enclosing definition (`act`, `cell`)."""

    name: str


@dataclass(frozen=True, slots=True)
class BuiltinMod:
    """A primitive function of the language (`relu`, `softmax`, `sum`)."""

    name: str


ModRef = Union[GlobalMod, ConfigMod, BuiltinMod]


# --- expressions ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TConst:
    value: float
    type: Tensor
    span: Span


@dataclass(frozen=True, slots=True)
class TLocal:
    """A data argument or a let-bound value of the enclosing definition."""

    name: str
    type: Tensor
    span: Span


@dataclass(frozen=True, slots=True)
class TParam:
    name: str
    type: Tensor
    span: Span


@dataclass(frozen=True, slots=True)
class TPrim:
    """A primitive operation on values: add, matmul, relu, conv2d, flatten...

    `attrs` are its sizes (`stride`, `padding`, `size`), over the definition's dimensions.
    """

    op: str
    args: tuple["TExpr", ...]
    type: Tensor
    span: Span
    attrs: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class TCall:
    """One call site of a module: its own parameter instance (`feedforward2`)."""

    callee: ModRef
    args: tuple["TExpr", ...]
    type: Tensor
    span: Span
    site: str  # base of the parameter path
    index: int  # k-th call of the same callee in this definition (1-based)
    dims: tuple[tuple[object, object], ...]  # callee's signature variable -> fresh variable
    elementwise: bool = False


@dataclass(frozen=True, slots=True)
class TMap:
    """`map(M, xs)`: one call of M (one set of parameters) applied to every element of xs.

    The call's argument is the placeholder TLocal `ELEMENT`; `scan` is the same with the
    running state as the first argument (TLocal `STATE`), starting from zeros."""

    kind: str  # "map" | "scan" | "repeat" (then seq is the value and count the L)
    call: TCall
    seq: "TExpr"
    type: Tensor
    span: Span
    count: object = None
    extra: tuple = ()  # repeat's further arguments, the same for every block


ELEMENT, STATE = "<element>", "<state>"

TExpr = Union[TConst, TLocal, TParam, TPrim, TCall, TMap]


# --- definitions ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TConfigParam:
    name: str
    sig: ModSig | str | None  # a signature or the name of an abstract module
    default: ModRef | None
    span: Span


@dataclass(frozen=True, slots=True)
class TParamDecl:
    name: str
    type: Tensor  # over the signature's dimension variables
    init: str
    init_args: tuple[float, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TDef:
    name: str
    sig: ModSig
    inputs: tuple[str, ...]
    config: tuple[TConfigParam, ...]
    params: tuple[TParamDecl, ...]
    lets: tuple[tuple[str, TExpr], ...]
    result: TExpr
    subst: dict
    site_counts: dict
    implements: str | None
    span: Span
    sizes: tuple = ()  # (name, DimVar, default) of its size arguments
    carries: tuple = ()  # (name, Tensor): what it carries from one step of a scan to the next
    kernel: str | None = None  # the fused kernel that runs a scan of it (dsl/kernels.py)
    reals: tuple = ()  # (name, default) of its real arguments (`dropout = 0.0`)


@dataclass(frozen=True, slots=True)
class TProgram:
    defs: dict[str, TDef]
    abstracts: dict[str, ModSig]
    signatures: dict[str, ModSig]
    train: TTrain | None  # the train block of the user's program (the last one checked)
    runs: tuple[TRun, ...]  # its run blocks
    sizes: dict[str, tuple[str, ...]]  # module -> its size arguments (`k`, `s`, `p`)


# --- train and run blocks (dsl/check_blocks.py) -----------------------------------------------
@dataclass(frozen=True, slots=True)
class TSource:
    """Data a block names, its arguments checked and their defaults filled in."""

    kind: str  # a name of blocks.SOURCES: digits, npz, csv, text, reversal, random
    args: tuple[tuple[str, object], ...]  # every named argument, by the source's table
    span: Span
    file: str | None = None  # a file name as written, relative to the program's folder
    text: str | None = None  # a text known by name (`text(pydoc_topics)`)
    targets: bool = True  # it gives targets (random, csv(label = none) do not)
    windows: bool = False  # text(split = train): random windows of the training text

    def arg(self, name: str):
        return dict(self.args)[name]


@dataclass(frozen=True, slots=True)
class TOptimizer:
    name: str
    hyper: tuple[tuple[str, float], ...]  # every hyperparameter, the defaults filled in
    span: Span


@dataclass(frozen=True, slots=True)
class TSchedule:
    """The learning rate over a run: `warmup` steps rising linearly, then the schedule
    (interpreter/training/schedule.py). The spans are the settings', for errors the data
    reveals (a warmup longer than a run of epochs)."""

    name: str = "constant"  # a name of blocks.SCHEDULES
    args: tuple[tuple[str, object], ...] = ()  # its arguments, the defaults filled in
    warmup: int = 0
    span: Span | None = None
    warmup_span: Span | None = None

    def arg(self, name: str):
        return dict(self.args)[name]


@dataclass(frozen=True, slots=True)
class TTrain:
    """A checked train block; `check_blocks.override` applies `dp train --set` by its rules."""

    model: str
    model_span: Span
    data: TSource
    loss: str
    optimizer: TOptimizer
    batch: int
    epochs: int
    steps: int | None
    seed: int
    checkpoint: str | None  # relative to the program's folder
    eval: TSource | None
    outputs: str  # "classes", "tokens", "values" (squared_error, absolute_error) or "signs"
    # (one score whose sign is one of two classes: logistic, hinge)
    span: Span
    schedule: TSchedule = TSchedule()
    clip: float | None = None  # the bound on the gradient's global norm
    patience: int | None = None  # evaluations without a better held-out loss before stopping


@dataclass(frozen=True, slots=True)
class TReport:
    """One item of a print: text as written (`name` "text"), or a report on a module."""

    name: str  # "text" or a name of blocks.REPORTS
    label: str  # the text, or the report as written, shown before its value
    span: Span
    model: str | None = None
    model_span: Span | None = None
    data: TSource | None = None
    loss: str = "cross_entropy"  # the model's loss: its train block's, else by its outputs
    outputs: str = "classes"  # as TTrain.outputs
    count: int = 0  # predict's examples, generate's characters
    prompt: str = ""
    options: tuple[tuple[str, object], ...] = ()  # generate's temperature, top_k and seed


@dataclass(frozen=True, slots=True)
class TPrint:
    items: tuple[TReport, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TRun:
    prints: tuple[TPrint, ...]
    span: Span
