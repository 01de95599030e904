"""Stage 2, the last pass: every concrete module checked as the model it can be.

A definition is checked once, generically, with its sizes as names. What only concrete sizes
reveal is found here, by walking each module that has concrete sizes through the calls it
makes, with the sizes and module arguments each call gives, as lowering will inline them:
`h / 2` of an odd h, a window larger than its input, heads that do not divide the width, a
module argument that cannot take or give the shape it meets there, a value that must be
computed from the input, a mask that is not a softmax's, `previous` outside the module that
gives the model's output. An error inside another file (the standard library) points at the
user's call, with a note saying where inside.

The walk's values are what lowering's are without the batch axis (`Val`). The decisions are
made by the functions of this file, and lowering uses the same ones (interpreter/core/lower.py),
so lowering cannot meet a case this pass let through: one that did would be a bug in dp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import typed as T
from .builtins import BUILTINS, Builtin, dropout_rate
from .dims import DimVar, fixed_of, free_vars, resolve
from .errors import DpError, Span, where
from .frames import (
    Frame,
    bind_dims,
    callee_dims,
    check_result,
    expected,
    frame,
    model_dims,
    model_signature,
    resolve_ref,
)
from .kernels import SCAN_KERNELS
from .provenance import at
from .types import ModSig, Tensor

MAX_REPEAT = 1000  # blocks of one repeat(...): 3,000 transformer blocks take seconds to lower
MAX_SCAN = 10_000  # steps of one unrolled scan(...): a model of 10,000 steps of an LSTM-like
# cell of the user's takes about 5 s to build (each step is inlined; the kernels are not)


# --- the decisions, which lowering shares ---------------------------------------------------
def masked_scores(f: Frame, e: T.TExpr) -> tuple[T.TExpr, Span] | None:
    """The scores and the span of `causal(scores)`, written so or as a module argument that
    is `causal` here (`mask = causal`); None for any other expression."""
    if isinstance(e, T.TPrim) and e.op == "causal":
        return e.args[0], e.span
    if (isinstance(e, T.TCall) and isinstance(e.callee, T.ConfigMod) and len(e.args) == 1
            and f.config.get(e.callee.name) == T.BuiltinMod("causal")):
        return e.args[0], e.span
    return None


def square_scores(shape: tuple, span) -> None:
    """causal masks square scores R^(n, n) (a mask passed as `R -> R` may be given others)."""
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise DpError("shape", f"causal masks square scores R^(n, n), but it is given "
                      f"{Tensor(shape)} here", span)


def heads_divide(h: int, d: int, span) -> None:
    if d % h:
        raise DpError("shape", f"{h} heads do not divide the width {d}", span,
                      ("the number of heads must divide d",))


def conv_padding(op: str, kernel: tuple, given: int | None, span):
    """A convolution's padding: as given, or the one that keeps the size, (k - 1) / 2 on
    each axis (the kernel must have a middle pixel); one number when the axes agree, else a
    pair (height, width)."""
    if given is not None:
        return given
    if any(k % 2 == 0 for k in kernel):
        raise DpError("shape", f"{op} pads to the same size only with an odd kernel, but "
                      f"the kernel is {' by '.join(map(str, kernel))} here", span)
    pads = tuple((k - 1) // 2 for k in kernel)
    return pads[0] if len(set(pads)) == 1 else pads


def groups_divide(groups: int, channels: int, made: int, span) -> None:
    """A grouped convolution cuts its input and output channels into `groups` alike."""
    for n, which in ((channels, "input channels"), (made, "output channels")):
        if n % groups:
            raise DpError("shape", f"conv2d: {groups} groups do not divide the {n} {which} "
                          "here", span)


def window_fits(f: Frame, e: T.TPrim, sizes, kernel: tuple, pad) -> None:
    """The checker's test of a window against its input, for the sizes that a generic module
    (`OverlapPool: R^(c, h, w) -> ...`) knows only here; a kernel size and a padding for
    each axis (or one padding for all)."""
    pads = pad if isinstance(pad, tuple) else (pad,) * len(kernel)
    for axis, (n, k, p) in enumerate(zip(sizes, kernel, pads, strict=True)):
        if n + 2 * p < k:
            err = DpError("shape", f"{f.tdef.name} cannot be used with these sizes: the window "
                          f"{k} is larger than the input {n}", e.span)
            x, first = e.args[0].type, 0 if e.op == "conv1d" else 1
            window = dict(e.attrs)["size"] if e.op.endswith("pool2d") else \
                e.args[1].type.shape[2 + axis]
            err.about = (x.shape[first + axis], window)  # the sizes the notes explain
            raise err


def sizes_positive(f: Frame, span) -> None:
    """Every size of an instance is at least 1, but for a size argument that defaults to 0
    (a padding): one may be given 0, and pass it on where only a padding may be."""
    zero = {var for _, var, default in f.tdef.sizes if default == 0}
    for var, v in f.dims.items():
        if v < 0 or v == 0 and var not in zero:
            raise DpError("shape", f"{f.tdef.name} cannot be used with {var.name} = {v}: "
                          "every size must be at least 1", span)


def repeat_count(f: Frame, e: T.TMap) -> int:
    count = f.size(e.count)
    if count > MAX_REPEAT:  # each block is inlined: a huge count would never finish lowering
        raise DpError("limit", f"repeat makes {count} blocks here, more than the limit of "
                      f"{MAX_REPEAT:,}", e.span)
    return count


def call_site(f: Frame, call: T.TCall) -> str:
    """A call's parameter path: `Net.block`, or `Net.block2` where the body calls it twice."""
    count = f.tdef.site_counts.get(call.site, 1)
    return f"{f.prefix}.{call.site if count == 1 else f'{call.site}{call.index}'}"


def scan_kernel(tprog: T.TProgram, f: Frame, e: T.TMap, d: tuple,
                kernels=SCAN_KERNELS) -> tuple[str, list[Frame]] | None:
    """The fused kernel that runs `scan(cell, xs)` (elements of shape `d`) and the frames of
    the cell's gates, when the cell declares one and its activations are the kernel's (its
    language definition is the kernel's specification). None: the cell is unrolled, one
    inlined step per element. `kernels`: those lowering fuses (tests unroll with none)."""
    ref = resolve_ref(e.call.callee, f)
    kernel = _kernel(tprog, ref, kernels)
    if kernel is None:
        return None
    state = tuple(f.size(x) for x in e.type.shape[1:])
    cell = frame(tprog, ref, bind_dims(tprog, ref, [state, d], e.span), call_site(f, e.call))
    gates = _gates(tprog, cell, kernels[kernel].gates, kernels)
    return None if gates is None else (kernel, gates)


def scan_steps(n: int, span) -> None:
    """An unrolled scan inlines its cell once per element: a long sequence would never finish
    building."""
    if n > MAX_SCAN:
        raise DpError("limit", f"scan unrolls its cell {n} times here, one step per element "
                      f"of the sequence, more than the limit of {MAX_SCAN:,}", span,
                      ("give it a shorter sequence, or a cell that runs as one fused kernel "
                       "whatever the length: SimpleRNN (with tanh) or LSTM of the standard "
                       "library, or a cell that declares `kernel rnn_scan` or `kernel "
                       "lstm_scan`",))


def _kernel(tprog: T.TProgram, ref, kernels) -> str | None:
    """The kernel a defined module declares, if lowering fuses it."""
    tdef = tprog.defs.get(ref.name) if isinstance(ref, T.GlobalMod) else None
    return tdef.kernel if tdef is not None and tdef.kernel in kernels else None


def _gates(tprog: T.TProgram, cell: Frame, acts: tuple, kernels) -> list | None:
    """The frames of a cell's gates, each act(U h + V x + b), if their activations are the
    kernel's: an rnn_scan cell is its own one gate; an lstm_scan cell's gates are the calls of
    its first lets (i, f, g, o, torch's order), each of a cell declaring rnn_scan (the checker
    made sure the bodies are the kernels' forms). None: unroll it instead."""
    if len(acts) == 1:
        return [cell] if _activation(cell) == acts[0] else None
    gates = []
    for (_, call), act in zip(cell.tdef.lets, acts, strict=False):
        ref = resolve_ref(call.callee, cell)
        if _kernel(tprog, ref, kernels) != "rnn_scan":
            return None
        gate = frame(tprog, ref, callee_dims(cell, call), call_site(cell, call))
        if _activation(gate) != act:
            return None
        gates.append(gate)
    return gates


def _activation(cell: Frame) -> str | None:
    """The builtin an rnn_scan cell's result applies, as this frame binds it."""
    callee = cell.tdef.result.callee
    ref = cell.config.get(callee.name) if isinstance(callee, T.ConfigMod) else callee
    return ref.name if isinstance(ref, T.BuiltinMod) else None


def _about(f: Frame, err: DpError) -> set:
    """The variables of this instance in the sizes an error is about (`err.about`)."""
    return {v for d in err.about for v in free_vars(resolve(d, f.tdef.subst))}


def _caller_sizes(f: Frame, call: T.TCall, about: set) -> tuple:
    """The caller's sizes that gave the callee's variables `about`: what the call binds them
    to, or the axes of its arguments and result where the callee's signature has them."""
    out = [fv for var, fv in call.dims if var in about]
    for want, got in zip((*f.tdef.sig.args, f.tdef.sig.result),
                         (*(a.type for a in call.args), call.type)):
        out += [d for w, d in zip(want.shape, got.shape) if w in about]
    return tuple(out)


def previous_fits(name: str, sig: ModSig, out: tuple, previous: tuple, vocab: int,
                  span) -> None:
    """`previous` is the model's own output tokens: it must be in the module that gives it."""
    if sig.result.vocab is None or previous != out[:-1] or vocab != out[-1]:
        raise DpError("type", f"previous is {name}'s own output tokens before each position, "
                      f"so it must be in the module that gives {name}'s output ({sig.result})",
                      span)


def batched(op: str, is_batched: bool, span) -> None:
    if not is_batched:
        raise DpError("type", f"{op} needs a batched value (a module's input or what it "
                      "computed from it)", span)


def vector(name: str, shape: tuple, span) -> None:
    if not shape:  # passed as `R -> R` and given a number
        raise DpError("shape", f"{name} needs a vector, but it is given a number R here", span)


def foldable(b: Builtin, span) -> None:
    if b.fold is None:
        raise DpError("type", f"{b.name} of a constant: write the number instead", span)


def not_scores(ids_rank: int, type_rank: int, span) -> None:
    """A row of an embedding is chosen by a token id; a module's token output is scores."""
    if ids_rank != type_rank:
        raise DpError("type", "a row of an embedding needs a token, but this is the scores a "
                      "module gives over a vocabulary: tokens are the model's input and "
                      "previous", span)


# --- the walk ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Val:
    """A value as lowering will have it, for one example: its shape (scores with the
    vocabulary last), whether it is computed from the input, whether it is a known number."""

    shape: tuple
    batched: bool
    const: bool = False


CONST = Val((), False, True)


def instance_errors(tprog: T.TProgram) -> list[DpError]:
    """The first error of each module that has concrete sizes, walked as a model."""
    errors = []
    for name in tprog.defs:
        try:
            model_signature(tprog, name, None)
        except DpError:
            continue  # generic: it is walked where a concrete module uses it
        try:
            _Walk(tprog).model(name)
        except DpError as e:
            errors.append(e)
    return errors


class _Walk:
    def __init__(self, tprog: T.TProgram):
        self.tprog = tprog
        self.previous: tuple | None = None  # (shape, vocabulary, span) of the first use
        self.done: dict = {}  # an instance walked already -> its result
        self.file: str | None = None  # the model's file: the user's program
        self.whys: list[dict] = []  # per inlined frame: its size variable -> what fixed it

    def model(self, name: str) -> None:
        args, _, sig = model_signature(self.tprog, name, None)
        self.file = self.tprog.defs[name].span.file
        vals = [Val(s, True) for s in args]
        dims = model_dims(self.tprog, name)
        out = self.inline(T.GlobalMod(name), dims, vals, None,
                          {v: "its default" for v in dims})
        if self.previous is not None:
            shape, vocab, span = self.previous
            previous_fits(name, sig, out.shape, shape, vocab, span)

    def inline(self, ref: T.ModRef, dims: dict, args: list[Val], call: T.TCall | None,
               whys: dict | None = None) -> Val:
        """`whys`: what fixed each of `dims` (said when an error shows that size)."""
        if isinstance(ref, T.BuiltinMod):  # passed as a module: as if applied to the arguments
            e = T.TPrim(ref.name, call.args, call.type, call.span)
            return self.builtin(None, BUILTINS[ref.name], e, args)
        key = (ref, tuple(sorted(dims.items(), key=str)), tuple(args))
        if key in self.done:
            return self.done[key]
        f = frame(self.tprog, ref, dict(dims), "")
        self.whys.append(whys or {})
        try:
            sizes_positive(f, call.span if call is not None else f.tdef.span)
            f.values.update(zip(f.tdef.inputs, args, strict=True))
            for name, t in f.tdef.carries:
                f.values[name] = Val(tuple(f.size(d) for d in t.shape), True)
            out = self.body(f)
        except DpError as err:
            if call is None or err.span is None or (err.span.file == call.span.file
                                                    != self.file):
                raise
            fixed = self._fixed_notes(f, err)
            if err.span.file == call.span.file:  # the user's definition: say which use
                outer = DpError(err.kind, err.message, err.span, err.notes + (
                    f"{f.tdef.name} is used{_sizes(f)} at {where(call.span)}", *fixed))
            else:  # a size that fails inside another file (the standard library): the user's call
                outer = DpError(err.kind, err.message, call.span, err.notes + (
                    f"inside {f.tdef.name}, at {where(err.span)}", *fixed))
            if getattr(err, "about", None) is not None:
                outer.about = _caller_sizes(f, call, _about(f, err))
            raise outer from None
        finally:
            self.whys.pop()
        self.done[key] = out
        return out

    def _fixed_notes(self, f: Frame, err: DpError) -> tuple[str, ...]:
        """What fixed each size of this instance that the error is about: the variables it
        names (`about`, where it was raised in this instance), else those whose number the
        message shows."""
        about = _about(f, err) if getattr(err, "about", None) is not None else None
        shown = set(re.findall(r"\b\d+\b", err.message))
        whys = self.whys[-1]
        return tuple(f"{f.tdef.name}'s {var.name} = {v}, {whys[var]}"
                     for var, v in f.dims.items() if var in whys and (
                         var in about if about is not None else str(v) in shown))

    def _argument_whys(self, f: Frame, e: T.TCall, ref: T.GlobalMod, dims: dict) -> dict:
        """What fixed the sizes of a module argument (frames.bind_dims): given with it, its
        defaults, or the shapes it meets."""
        given = {n for n, _ in ref.dims}
        tdef = self.tprog.defs.get(ref.name)
        defaults = {var: d for _, var, d in tdef.sizes if d is not None} if tdef else {}
        met = f"from what {f.tdef.name} gives it at {at(e.span, self.file)}"
        return {v: "as given with it" if v.name in given
                else "its default" if v in defaults else met
                for v in dims}

    def _call_whys(self, f: Frame, e: T.TCall) -> dict:
        """What fixed each size a call of a named module gives it: the binding the checker
        recorded at the call, or the caller's own size it is."""
        s, mine = f.tdef.subst, self.whys[-1] if self.whys else {}
        out = {}
        for var, fv in e.dims:
            why = _deepest(fv, s)
            if why is not None:
                out[var] = f"from {why.text} at {at(why.span, self.file)}"
                continue
            value = resolve(fv, s)
            if isinstance(value, DimVar) and value in mine:
                out[var] = f"as {f.tdef.name}'s {value.name}, {mine[value]}"
        return out

    def body(self, f: Frame) -> Val:
        for p in f.tdef.params:
            f.values[p.name] = Val(tuple(f.size(d) for d in p.type.shape), False)
        for name, e in f.tdef.lets:
            f.values[name] = self.emit(f, e)
        return self.emit(f, f.tdef.result)

    def emit(self, f: Frame, e: T.TExpr) -> Val:
        if isinstance(e, T.TConst):
            return CONST
        if isinstance(e, (T.TLocal, T.TParam)):
            return f.values[e.name]
        if isinstance(e, T.TCall):
            return self.call(f, e, [self.emit(f, a) for a in e.args])
        if isinstance(e, T.TMap):
            return self.builtin(f, BUILTINS[e.kind], e, [])
        masked = masked_scores(f, e.args[0]) if e.op == "softmax" else None
        if masked is not None:
            scores = self.emit(f, masked[0])
            square_scores(scores.shape, masked[1])
            return Val(scores.shape, scores.batched)
        args = [self.emit(f, a) for a in e.args]
        if e.op in BUILTINS:
            return self.builtin(f, BUILTINS[e.op], e, args)
        if e.op == "dim":
            f.size(dict(e.attrs)["value"])
            return CONST
        if e.op == "previous":
            shape = tuple(f.size(d) for d in e.type.shape)
            if self.previous is None:
                self.previous = (shape, f.size(e.type.vocab), e.span)
            return Val(shape, True)
        if e.op == "embed":
            not_scores(len(args[0].shape), len(e.args[0].type.shape), e.span)
        if all(a.const for a in args):  # neg and arithmetic of numbers
            return CONST
        return self.typed(f, e, args)

    def typed(self, f: Frame, e: T.TExpr, args: list[Val]) -> Val:
        """The value the checker's type says, with the vocabulary of scores, computed from
        the input when an argument is."""
        shape = tuple(f.size(d) for d in e.type.shape)
        if e.type.vocab is not None and args and len(args[0].shape) > len(e.args[0].type.shape):
            shape += (f.size(e.type.vocab),)
        return Val(shape, any(a.batched for a in args))

    def call(self, f: Frame, e: T.TCall, args: list[Val]) -> Val:
        if not isinstance(e.callee, T.ConfigMod):
            return self.inline(resolve_ref(e.callee, f), callee_dims(f, e), args, e,
                               self._call_whys(f, e))
        ref = f.config[e.callee.name]
        if isinstance(ref, T.BuiltinMod):
            out = self.inline(ref, {}, args, e)
        elif e.elementwise:  # a module of numbers applied to each entry: the arguments' shape
            out = self.inline(ref, {}, [Val((), a.batched, a.const) for a in args], e)
            shape = next((a.shape for a in args if a.shape), ())
            return Val(shape, out.batched or any(a.batched for a in args), out.const)
        else:
            dims = bind_dims(self.tprog, ref, [a.shape for a in args], e.span,
                             f"{f.tdef.name}'s '{e.callee.name}' is ", expected(f, e))
            out = self.inline(ref, dims, args, e, self._argument_whys(f, e, ref, dims))
        if not e.elementwise:
            check_result(f, e, ref, out.shape)
        return out

    def builtin(self, f: Frame | None, b: Builtin, e, args: list[Val]) -> Val:
        """A builtin's conditions on concrete sizes; `f` is None when it was passed as a
        module (then it has no sizes of its own)."""
        if b.name == "where":  # four values, any of them a number: the shape of its type
            return CONST if all(a.const for a in args) else self.typed(f, e, args)
        if args and args[0].const:  # `sqrt(e)` of a dimension: a number
            foldable(b, e.span)
            return CONST
        x = args[0] if args else None
        if b.lowering is None or b.lowering == "token":
            return x
        if b.lowering == "last_axis":
            vector(b.name, x.shape, e.span)
            return x
        if b.lowering == "causal":  # not a softmax's own argument (emit saw to those)
            square_scores(x.shape, e.span)
            raise DpError("type", "causal(...) masks scores for a softmax: write "
                          "softmax(causal(scores))", e.span)
        if b.lowering == "reduce_all":
            return Val((), x.batched)
        if b.lowering == "dropout":  # a real argument's value is known here
            dropout_rate(f.real(dict(e.attrs)["p"]), e.span)
            return x
        if b.lowering == "reduce_sequence":
            return Val(x.shape[1:], x.batched)
        return getattr(self, b.lowering)(f, e, args)

    def heads(self, f: Frame, e: T.TPrim, args: list[Val]) -> Val:
        x = args[0]
        if e.op != "transpose":
            batched(e.op, x.batched, e.span)
        if e.op == "split_heads":
            heads_divide(f.size(dict(e.attrs)["h"]), x.shape[-1], e.span)
        return self.typed(f, e, args)

    def volume(self, f: Frame, e: T.TPrim, args: list[Val]) -> Val:
        x = args[0]
        batched(e.op, x.batched, e.span)
        attrs = {k: f.size(v) for k, v in e.attrs if v is not None}
        if e.op in ("maxpool2d", "avgpool2d"):
            window_fits(f, e, x.shape[1:], (attrs["size"],) * 2, 0)
        elif e.op in ("conv2d", "conv1d"):
            kernel = args[1].shape[2:]
            pad = conv_padding(e.op, kernel, attrs.get("padding"), e.span)
            if e.op == "conv2d":
                groups_divide(attrs["groups"], x.shape[0], args[1].shape[0], e.span)
            window_fits(f, e, x.shape[1:] if e.op == "conv2d" else x.shape[:1], kernel, pad)
        return self.typed(f, e, args)

    def map(self, f: Frame, e: T.TMap, args) -> Val:
        xs = self.emit(f, e.seq)
        batched(e.kind, xs.batched, e.seq.span)  # its steps run as one batch
        out = self.call(f, e.call, [Val(xs.shape[1:], xs.batched)])
        return Val(xs.shape[:1] + out.shape, out.batched)

    def scan(self, f: Frame, e: T.TMap, args) -> Val:
        xs = self.emit(f, e.seq)
        batched(e.kind, xs.batched, e.seq.span)
        state = Val(tuple(f.size(d) for d in e.type.shape[1:]), True)
        out = self.call(f, e.call, [state, Val(xs.shape[1:], xs.batched)])
        if scan_kernel(self.tprog, f, e, xs.shape[1:]) is None:
            scan_steps(xs.shape[0], e.span)
        return Val(xs.shape[:1] + out.shape, True)

    def repeat(self, f: Frame, e: T.TMap, args) -> Val:
        count = repeat_count(f, e)
        x = self.emit(f, e.seq)
        extra = [self.emit(f, a) for a in e.extra]
        for _ in range(count):  # the blocks are alike: one walk each until nothing changes
            y = self.call(f, e.call, [x] + extra)
            if y == x:
                break
            x = y
        return x


def _deepest(v, s: dict):
    """What fixed a call's variable: the last record along the chain of variables it was
    bound to (where its number came from)."""
    fixed, best = fixed_of(s), None
    seen = set()
    while isinstance(v, DimVar) and not v.rigid and v not in seen:
        seen.add(v)
        best = fixed.get(v, best)
        v = s.get(v)
    return best


def _sizes(f: Frame) -> str:
    """` with n = 5, d = 8`: the sizes of the signature an instance has."""
    known = [f"{v.name} = {f.dims[v]}" for v in f.tdef.sig.dims if v in f.dims]
    return " with " + ", ".join(known) if known else ""
