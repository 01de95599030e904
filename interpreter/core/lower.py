"""Stage 3: a checked module + concrete sizes + a batch size -> Plan of batched primitives.

Modules are inlined: each call site gets its own parameters under its path
(`Digits.feedforward2.W`), dimension variables become integers, and the batch axis is added
here (docs/architecture.md, "The plan and its invariants"), so kernels always see whole
batches. Every output shape comes from its primitive's shape rule (Plan.add): lowering says
what to compute, never what shape it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp.dsl import typed as T
from dp.dsl.builtins import BUILTINS, Builtin
from dp.dsl.dims import DimVar, Mismatch, resolve
from dp.dsl.errors import DpError, Span, where
from dp.dsl.kernels import SCAN_KERNELS
from dp.dsl.signatures import unbound_error
from dp.dsl.types import Tensor, apply_subst

from .fuse import fuse
from .lower_ops import (
    binary,
    example_rank,
    heads,
    last_axis,
    matmul,
    reduce_all,
    reduce_sequence,
    token,
    volume,
)
from .plan import Atom, Const, ParamSpec, Plan, Var, check_plan

BYTES_LIMIT = 8 * 2**30
MAX_REPEAT = 1000  # blocks of one repeat(...): 3,000 transformer blocks take seconds to lower


@dataclass(frozen=True)
class _Frame:
    """What one inlined definition sees: its sizes, configuration and parameter prefix."""

    tdef: T.TDef
    dims: dict  # rigid DimVar -> int
    config: dict  # name -> ModRef (resolved: never a ConfigMod)
    prefix: str
    values: dict  # local name -> Atom

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


def concrete_sig(tprog: T.TProgram, name: str, span: Span | None):
    """The argument and result array shapes of a module with no open dimensions.

    Tokens are ids as arguments (`Token[V]^n`: n integers) and scores as results (n by V)."""
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


def lower(tprog: T.TProgram, name: str, batch: int, span: Span | None = None) -> Plan:
    """The forward plan of module `name` on a batch of `batch` examples."""
    arg_shapes, _, sig = concrete_sig(tprog, name, span)
    plan = Plan()
    args = [plan.new_var((batch,) + s, True, "int64" if t.vocab is not None else "float32")
            for s, t in zip(arg_shapes, sig.args, strict=True)]
    plan.inputs.extend(args)
    out = _inline(plan, tprog, T.GlobalMod(name), {}, name, args)
    if isinstance(out, Const):
        out = plan.add("add", (args[0], out), span)
    plan.outputs.append(out)
    if plan.previous is not None and (sig.result.vocab is None or plan.previous.shape !=
                                      out.shape[:-1] or plan.previous_vocab != out.shape[-1]):
        raise DpError("type", f"previous is {name}'s own output tokens before each position, so "
                      f"it must be in the module that gives {name}'s output ({sig.result})",
                      plan.previous_span)
    check_plan(plan)
    fuse(plan)
    _check_memory(plan, span)
    return plan


def _check_memory(plan: Plan, span) -> None:
    total = sum(4 * math.prod(v.shape) for v in plan.params.values())
    total += sum(4 * math.prod(e.out.shape) for e in plan.eqns)
    if total > BYTES_LIMIT:
        raise DpError("resource", f"the model needs {total / 2**30:.1f} GiB of buffers, more "
                      f"than the limit of {BYTES_LIMIT / 2**30:.0f} GiB", span)


def _inline(plan: Plan, tprog: T.TProgram, ref: T.ModRef, dims_env: dict, prefix: str,
            args: list[Atom], call: T.TCall | None = None, carry: dict | None = None) -> Atom:
    """Module `ref` (resolved: no configuration names left in it) on `args`. A cell that
    carries values takes the previous step's from `carry` and leaves its new ones there."""
    if isinstance(ref, T.BuiltinMod):  # passed as a module: as if applied to the arguments
        e = T.TPrim(ref.name, call.args, call.type, call.span)
        return _lower_builtin(plan, tprog, None, BUILTINS[ref.name], e, args)
    frame = _frame(tprog, ref, dims_env, prefix, call)
    frame.values.update(zip(frame.tdef.inputs, args, strict=True))
    tdef = frame.tdef
    try:
        if tdef.carries:
            _carry_in(plan, frame, args[0].shape[0], carry, call)
        out = _body(plan, tprog, frame)
        if tdef.carries:
            carry.update({name: frame.values[name] for name, _ in tdef.carries})
        return out
    except DpError as err:
        if call is None or err.span is None or err.span.file == call.span.file:
            raise
        # a size that fails inside another file (the standard library): point at the user's call
        raise DpError(err.kind, err.message, call.span, err.notes + (
            f"inside {tdef.name}, at {where(err.span)}",)) from None


def _frame(tprog: T.TProgram, ref: T.GlobalMod, dims_env: dict, prefix: str, call) -> _Frame:
    tdef = tprog.defs.get(ref.name)
    if tdef is None:
        raise DpError("name", f"{ref.name} has a signature but no definition",
                      call.span if call else None)
    config = {c.name: c.default for c in tdef.config if c.default is not None}
    config.update(dict(ref.config))
    return _Frame(tdef, dims_env, config, prefix, {})


def _carry_in(plan: Plan, frame: _Frame, batch: int, carry: dict | None, call) -> None:
    tdef = frame.tdef
    if carry is None:
        names = " and ".join(name for name, _ in tdef.carries)
        raise DpError("type", f"{tdef.name} carries {names} from one step to the next, so it "
                      f"runs along a sequence: scan({tdef.name}, xs)", call.span if call else
                      tdef.span)
    for name, t in tdef.carries:
        if name not in carry:
            shape = (batch,) + tuple(frame.size(d) for d in t.shape)
            carry[name] = plan.add("fill", (Const(0.0),), tdef.span, batched=True, shape=shape)
        frame.values[name] = carry[name]


def _params(plan: Plan, frame: _Frame) -> None:
    """A parameter is its path: the steps of an unrolled scan share the cell's."""
    for p in frame.tdef.params:
        shape = tuple(frame.size(d) for d in p.type.shape)
        path = f"{frame.prefix}.{p.name}"
        if path in plan.params:
            frame.values[p.name] = plan.params[path]
            continue
        var = plan.new_var(shape, False)
        plan.params[path] = var
        plan.specs[path] = ParamSpec(path, shape, p.init, p.init_args, p.span)
        frame.values[p.name] = var


def _resolve(ref: T.ModRef, f: _Frame) -> T.ModRef:
    """A module reference with its configuration names and sizes replaced by what they are."""
    if isinstance(ref, T.ConfigMod):
        return f.config[ref.name]
    if isinstance(ref, T.BuiltinMod):
        return ref
    return T.GlobalMod(ref.name, tuple((k, _resolve(v, f)) for k, v in ref.config),
                       tuple((n, f.size(d)) for n, d in ref.dims))


def _bind_dims(tprog: T.TProgram, ref: T.GlobalMod, shapes, span, role: str = "") -> dict:
    """The sizes of a module passed as an argument: the ones given with it, its defaults, and
    what its arguments' concrete shapes fix (one example each: no batch axis)."""
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
                          f"cannot take "
                          f"{Tensor(tuple(shape), None, t.groups)} here", span,
                          (f"it is given {given}",) if given else ())
    return dims


def _binds(d, size: int, dims: dict) -> bool:
    """Whether dimension d of a signature can be `size`, binding it if it is a free name."""
    if isinstance(d, DimVar):
        dims.setdefault(d, size)
        return dims[d] == size
    return not isinstance(d, int) or d == size


def _check_result(f: _Frame, e: T.TCall, ref: T.ModRef, out: Atom) -> None:
    """A module argument must give what the definition it is passed to expects of it."""
    got = () if isinstance(out, Const) else out.shape[1:] if out.batched else out.shape
    dims = e.type.shape + ((e.type.vocab,) if e.type.vocab is not None else ())  # scores
    try:
        want = [resolve(resolve(d, f.tdef.subst), f.dims) for d in dims]
    except Mismatch:
        return  # a size that does not divide: lowering the definition says so
    if len(got) != len(want) or any(isinstance(w, int) and w != g
                                     for w, g in zip(want, got, strict=True)):
        shown = apply_subst(apply_subst(e.type, f.tdef.subst), f.dims)
        raise DpError("shape", f"{f.tdef.name} needs its argument '{e.callee.name}' to give "
                      f"{shown} here, but {ref.name} gives {Tensor(got)}", e.span)


def _body(plan: Plan, tprog: T.TProgram, frame: _Frame) -> Atom:
    tdef = frame.tdef
    _params(plan, frame)
    for name, e in tdef.lets:
        frame.values[name] = _emit(plan, tprog, frame, e)
    return _emit(plan, tprog, frame, tdef.result)


def _emit(plan: Plan, tprog: T.TProgram, f: _Frame, e: T.TExpr) -> Atom:
    if isinstance(e, T.TConst):
        return Const(e.value)
    if isinstance(e, (T.TLocal, T.TParam)):
        return f.values[e.name]
    if isinstance(e, T.TCall):
        return _call(plan, tprog, f, e, [_emit(plan, tprog, f, a) for a in e.args])
    if isinstance(e, T.TMap):
        return _lower_builtin(plan, tprog, f, BUILTINS[e.kind], e, [])
    masked = _masked_scores(f, e.args[0]) if e.op == "softmax" else None
    if masked is not None:
        return _causal_softmax(plan, tprog, f, e, masked)
    args = [_emit(plan, tprog, f, a) for a in e.args]
    if e.op in BUILTINS:
        return _lower_builtin(plan, tprog, f, BUILTINS[e.op], e, args)
    if e.op == "matmul":
        return matmul(plan, args[0], args[1], e.span)
    if e.op in ("add", "sub", "mul", "div"):
        return binary(plan, e.op, args[0], args[1], e.span)
    if e.op == "dim":
        return Const(float(f.size(dict(e.attrs)["value"])))
    if e.op == "previous":
        return _previous(plan, f, e)
    if e.op == "embed":
        ids, table = args
        if len(ids.shape) != 1 + len(e.args[0].type.shape):  # one more axis: scores, not ids
            raise DpError("type", "a row of an embedding needs a token, but this is the scores a "
                          "module gives over a vocabulary: tokens are the model's input and "
                          "previous", e.span)
        return plan.add("embed", (ids, table), e.span)
    assert e.op == "neg", e.op
    x = args[0]
    return Const(-x.value) if isinstance(x, Const) else plan.add("neg", (x,), e.span)


def _lower_builtin(plan: Plan, tprog: T.TProgram, f: _Frame | None, b: Builtin, e,
                   args: list[Atom]) -> Atom:
    """A builtin as its record says: its lowering function, or its primitive on its argument.
    `f` is None when the builtin was passed as a module (then it has no sizes of its own)."""
    if args and isinstance(args[0], Const):  # `sqrt(e)` of a dimension: a number
        if b.fold is None:
            raise DpError("type", f"{b.name} of a constant: write the number instead", e.span)
        return Const(float(b.fold(args[0].value)))
    if b.lowering is None:
        return plan.add(b.primitives[0], (args[0],), e.span)
    return LOWERINGS[b.lowering](plan, tprog, f, b, e, args)


def _repeat(plan: Plan, tprog: T.TProgram, f: _Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """L instances one after the other: `block1`, `block2`... each with its own parameters."""
    count = f.size(e.count)
    if count > MAX_REPEAT:  # each block is inlined: a huge count would never finish lowering
        raise DpError("limit", f"repeat makes {count} blocks here, more than the limit of "
                      f"{MAX_REPEAT:,}", e.span)
    x = _emit(plan, tprog, f, e.seq)
    extra = [_emit(plan, tprog, f, a) for a in e.extra]
    for i in range(1, count + 1):
        x = _call(plan, tprog, f, e.call, [x] + extra, site=f"{_site(f, e.call)}{i}")
    return x


def _previous(plan: Plan, f: _Frame, e: T.TPrim) -> Var:
    """The model's output tokens one position later: one more input of the plan, which
    training fills from the targets and generation from the model's own outputs."""
    shape = (plan.inputs[0].shape[0],) + tuple(f.size(d) for d in e.type.shape)
    if plan.previous is None:
        plan.previous = plan.new_var(shape, True, "int64")
        plan.previous_vocab, plan.previous_span = f.size(e.type.vocab), e.span
        plan.inputs.append(plan.previous)
    return plan.previous


def _site(f: _Frame, call: T.TCall) -> str:
    count = f.tdef.site_counts.get(call.site, 1)
    return f"{f.prefix}.{call.site if count == 1 else f'{call.site}{call.index}'}"


def _call(plan: Plan, tprog: T.TProgram, f: _Frame, e: T.TCall, args: list[Atom],
          carry: dict | None = None, site: str | None = None) -> Atom:
    site = site or _site(f, e)
    if not isinstance(e.callee, T.ConfigMod):
        dims = {var: f.size(fv) for var, fv in e.dims}
        return _inline(plan, tprog, _resolve(e.callee, f), dims, site, args, e, carry)
    # a module argument: its sizes come from its arguments; its result's fix the rest here
    ref = f.config[e.callee.name]
    dims = ({} if isinstance(ref, T.BuiltinMod) or e.elementwise else
            _bind_dims(tprog, ref, [a.shape[1:] for a in args], e.span,
                       f"{f.tdef.name}'s '{e.callee.name}' is "))
    out = _inline(plan, tprog, ref, dims, site, args, e, carry)
    if not e.elementwise:
        _check_result(f, e, ref, out)
    for d, size in zip(e.type.shape, out.shape[1:]):
        r = resolve(d, f.tdef.subst)
        if isinstance(r, DimVar) and r not in f.dims:
            f.dims[r] = size
    return out


def _map(plan: Plan, tprog: T.TProgram, f: _Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """map: the sequence axis joins the batch axis, the call runs once, and they part again."""
    xs = _emit(plan, tprog, f, e.seq)
    batch, n = xs.shape[0], xs.shape[1]
    flat = plan.add("reshape", (xs,), e.span, shape=(batch * n,) + xs.shape[2:])
    out = _call(plan, tprog, f, e.call, [flat])
    return plan.add("reshape", (out,), e.span, shape=(batch, n) + out.shape[1:])


def _scan(plan: Plan, tprog: T.TProgram, f: _Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """A cell along the sequence from a zero state. A cell that declares a kernel (`kernel
    rnn_scan`) runs as that one fused kernel, when its gates' activations are the kernel's
    (its language definition is the kernel's specification; tests hold the kernel to it); any
    other cell is unrolled, one inlined step per element, with parameters shared by path."""
    xs = _emit(plan, tprog, f, e.seq)
    ref = _resolve(e.call.callee, f)
    state = tuple(f.size(d) for d in e.type.shape[1:])
    kernel = _kernel(tprog, ref)
    if kernel is not None:
        dims = _bind_dims(tprog, ref, [state, xs.shape[2:]], e.span)
        frame = _frame(tprog, ref, dims, _site(f, e.call), e.call)
        gates = _gates(tprog, frame, SCAN_KERNELS[kernel].gates)
        if gates is not None:
            return _fused_scan(plan, kernel, gates, xs, state, e.span)
    batch, n = xs.shape[0], xs.shape[1]
    h = plan.add("fill", (Const(0.0),), e.span, batched=True, shape=(batch,) + state)
    carry: dict = {}
    steps = []
    for t in range(n):
        x = plan.add("take", (xs,), e.span, axis=1, index=t)
        h = _call(plan, tprog, f, e.call, [h, x], carry)
        steps.append(h)
    return plan.add("stack", tuple(steps), e.span, axis=1)


def _kernel(tprog: T.TProgram, ref) -> str | None:
    """The kernel a defined module declares, if lowering fuses it (SCAN_KERNELS is the switch)."""
    tdef = tprog.defs.get(ref.name) if isinstance(ref, T.GlobalMod) else None
    return tdef.kernel if tdef is not None and tdef.kernel in SCAN_KERNELS else None


def _gates(tprog: T.TProgram, frame: _Frame, acts: tuple) -> list | None:
    """The frames of a cell's gates, each act(U h + V x + b), if their activations are the
    kernel's: an rnn_scan cell is its own one gate; an lstm_scan cell's gates are the calls of
    its first lets (i, f, g, o, torch's order), each of a cell declaring rnn_scan (the checker
    made sure the bodies are the kernels' forms). None: unroll it instead."""
    if len(acts) == 1:
        return [frame] if _activation(frame) == acts[0] else None
    gates = []
    for (_, call), act in zip(frame.tdef.lets, acts, strict=False):
        ref = _resolve(call.callee, frame)
        if _kernel(tprog, ref) != "rnn_scan":
            return None
        dims = {var: frame.size(fv) for var, fv in call.dims}
        gate = _frame(tprog, ref, dims, _site(frame, call), call)
        if _activation(gate) != act:
            return None
        gates.append(gate)
    return gates


def _activation(frame: _Frame) -> str | None:
    """The builtin an rnn_scan cell's result applies, as this frame binds it."""
    callee = frame.tdef.result.callee
    ref = frame.config.get(callee.name) if isinstance(callee, T.ConfigMod) else callee
    return ref.name if isinstance(ref, T.BuiltinMod) else None


def _fused_scan(plan: Plan, kernel: str, gates: list, xs: Var, state: tuple, span) -> Var:
    """xp = xs V^T + b for every step at once (one GEMM), then the kernel along the sequence;
    the gates' parameters are joined in the kernel's order."""
    for gate in gates:
        _params(plan, gate)

    def joined(name: str) -> Var:
        parts = tuple(g.values[name] for g in gates)
        return parts[0] if len(parts) == 1 else plan.add("concat", parts, span, axis=0)

    U, V, bias = joined("U"), joined("V"), joined("b")
    xp = plan.add("add", (plan.add("linear", (xs, V), span), bias), span)
    return plan.add(kernel, (xp, U), span)


def _causal(plan: Plan, tprog, f, b: Builtin, e: T.TPrim, args: list[Atom]) -> Var:
    """A mask with no softmax right around it: `_emit` lowers softmax(causal(s)) to the
    causal_softmax primitive, and a masked score means nothing to any other operation."""
    _square(args[0], e.span)
    raise DpError("type", "causal(...) masks scores for a softmax: write "
                  "softmax(causal(scores))", e.span)


def _masked_scores(f: _Frame, e: T.TExpr) -> tuple[T.TExpr, Span] | None:
    """The scores and the span of `causal(scores)`, written so or as a module argument that
    is `causal` here (`mask = causal`); None for any other expression."""
    if isinstance(e, T.TPrim) and e.op == "causal":
        return e.args[0], e.span
    if (isinstance(e, T.TCall) and isinstance(e.callee, T.ConfigMod) and len(e.args) == 1
            and f.config.get(e.callee.name) == T.BuiltinMod("causal")):
        return e.args[0], e.span
    return None


def _causal_softmax(plan: Plan, tprog, f: _Frame, e: T.TPrim, masked) -> Var:
    """softmax(causal(scores)): one primitive, the mask its own part."""
    scores, span = masked
    x = _square(_emit(plan, tprog, f, scores), span)
    return plan.add("causal_softmax", (x,), e.span)


def _square(x: Atom, span) -> Atom:
    """x, if it is square scores R^(n, n) (a mask passed as `R -> R` may be given others)."""
    if example_rank(x) < 2 or x.shape[-1] != x.shape[-2]:
        shape = () if isinstance(x, Const) else x.shape[1 if x.batched else 0:]
        raise DpError("shape", f"causal masks square scores R^(n, n), but it is given "
                      f"{Tensor(shape)} here", span)
    return x


# what a builtin's record names as its lowering (dsl/builtins.py)
LOWERINGS = {"last_axis": last_axis, "causal": _causal, "reduce_all": reduce_all,
             "reduce_sequence": reduce_sequence, "token": token, "volume": volume,
             "heads": heads, "map": _map, "scan": _scan, "repeat": _repeat}
