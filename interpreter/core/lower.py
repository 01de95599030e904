"""Stage 3: a checked module + concrete sizes + a batch size -> Plan of batched primitives.

Modules are inlined: each call site gets its own parameters under its path
(`Digits.feedforward2.W`), dimension variables become integers, and the batch axis is added
here (docs/architecture.md, "The plan and its invariants"), so kernels always see whole
batches. Every output shape comes from its primitive's shape rule (Plan.add): lowering says
what to compute, never what shape it has.
"""

from __future__ import annotations

import math

from dp.dsl import typed as T
from dp.dsl.builtins import BUILTINS, Builtin
from dp.dsl.errors import DpError, Span, where
from dp.dsl.frames import (
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
from dp.dsl.instances import (
    call_site,
    masked_scores,
    previous_fits,
    repeat_count,
    scan_kernel,
    scan_steps,
)
from dp.dsl.kernels import SCAN_KERNELS

from .fuse import fuse
from .lower_ops import (
    binary,
    dropout,
    heads,
    last_axis,
    matmul,
    reduce_all,
    reduce_sequence,
    same_shape_after,
    select,
    token,
    volume,
)
from .memory import BYTES_LIMIT, over_limit  # noqa: F401 (the REPL's limit too)
from .plan import Atom, Const, ParamSpec, Plan, PlanError, Var, check_plan


def lower(tprog: T.TProgram, name: str, batch: int, span: Span | None = None,
          fused: bool = True, copies: int = 0) -> Plan:
    """The forward plan of module `name` on a batch of `batch` examples (`fused=False`: every
    step the primitive the program wrote, for naming where a value went wrong). Whether the
    module can be a model is the checker's to say (dsl/instances.py); after that, a failure
    here is a bug in dp: PlanError, never the user's error. Then the memory pre-check, with
    `copies` more buffers of the parameters' size (training's gradients, optimizer state)."""
    arg_shapes, _, sig = model_signature(tprog, name, span)
    try:
        plan = _lower(tprog, name, batch, arg_shapes, sig, fused)
    except DpError as e:  # a decision of dsl/instances.py the checker did not make first
        raise PlanError(f"lowering {name} met what the checker let through: {e.message} "
                        f"({where(e.span) if e.span else 'no place'})") from None
    _check_memory(plan, tprog, name, span, copies)
    return plan


def _lower(tprog: T.TProgram, name: str, batch: int, arg_shapes, sig, fused: bool) -> Plan:
    plan = Plan()
    args = [plan.new_var((batch,) + s, True, "int64" if t.vocab is not None else "float32")
            for s, t in zip(arg_shapes, sig.args, strict=True)]
    plan.inputs.extend(args)
    out = _inline(plan, tprog, T.GlobalMod(name), model_dims(tprog, name), name, args)
    if isinstance(out, Const):
        out = plan.add("add", (args[0], out), None)
    plan.outputs.append(out)
    if plan.previous is not None:
        previous_fits(name, sig, out.shape[1:], plan.previous.shape[1:], plan.previous_vocab,
                      plan.previous_span)
    check_plan(plan)
    if fused:
        fuse(plan)
    return plan


def _check_memory(plan: Plan, tprog: T.TProgram, name: str, span, copies: int) -> None:
    """Before anything is allocated (memory.py): too much is an error at the layer that
    holds the biggest buffer (an input's: the model's definition)."""
    tdef = tprog.defs.get(name)
    refused = over_limit(plan, name, tdef.span if tdef is not None else span, copies)
    if refused is not None:
        raise DpError("resource", *refused)


def _inline(plan: Plan, tprog: T.TProgram, ref: T.ModRef, dims_env: dict, prefix: str,
            args: list[Atom], call: T.TCall | None = None, carry: dict | None = None) -> Atom:
    """Module `ref` (resolved: no configuration names left in it) on `args`. A cell that
    carries values takes the previous step's from `carry` and leaves its new ones there."""
    if isinstance(ref, T.BuiltinMod):  # passed as a module: as if applied to the arguments
        e = T.TPrim(ref.name, call.args, call.type, call.span)
        return _lower_builtin(plan, tprog, None, BUILTINS[ref.name], e, args)
    f = frame(tprog, ref, dims_env, prefix)
    first = plan.next_id
    f.values.update(zip(f.tdef.inputs, args, strict=True))
    if f.tdef.carries:  # a cell of a scan (the checker allows no other call of it)
        _carry_in(plan, f, args[0].shape[0], carry)
    out = _body(plan, tprog, f)
    if call is not None:
        plan.calls.append((first, plan.next_id, call.span, f.tdef.name))
    if f.tdef.carries:
        carry.update({name: f.values[name] for name, _ in f.tdef.carries})
    return out


def _carry_in(plan: Plan, frame: Frame, batch: int, carry: dict) -> None:
    tdef = frame.tdef
    for name, t in tdef.carries:
        if name not in carry:
            shape = (batch,) + tuple(frame.size(d) for d in t.shape)
            carry[name] = plan.add("fill", (Const(0.0),), tdef.span, batched=True, shape=shape)
        frame.values[name] = carry[name]


def _params(plan: Plan, frame: Frame) -> None:
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


def _body(plan: Plan, tprog: T.TProgram, frame: Frame) -> Atom:
    tdef = frame.tdef
    _params(plan, frame)
    for name, e in tdef.lets:
        frame.values[name] = _emit(plan, tprog, frame, e)
    return _emit(plan, tprog, frame, tdef.result)


def _emit(plan: Plan, tprog: T.TProgram, f: Frame, e: T.TExpr) -> Atom:
    if isinstance(e, T.TConst):
        return Const(e.value)
    if isinstance(e, (T.TLocal, T.TParam)):
        return f.values[e.name]
    if isinstance(e, T.TCall):
        return _call(plan, tprog, f, e, [_emit(plan, tprog, f, a) for a in e.args])
    if isinstance(e, T.TMap):
        return _lower_builtin(plan, tprog, f, BUILTINS[e.kind], e, [])
    masked = masked_scores(f, e.args[0]) if e.op == "softmax" else None
    if masked is not None:
        return _causal_softmax(plan, tprog, f, e, masked)
    if e.op == "where":  # its branches are emitted on safe inputs
        return _where(plan, tprog, f, BUILTINS["where"], e, [])
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
        return plan.add("embed", tuple(args), e.span)
    assert e.op == "neg", e.op
    x = args[0]
    return Const(-x.value) if isinstance(x, Const) else plan.add("neg", (x,), e.span)


def _lower_builtin(plan: Plan, tprog: T.TProgram, f: Frame | None, b: Builtin, e,
                   args: list[Atom]) -> Atom:
    """A builtin as its record says: its lowering function, or its primitive on its argument.
    `f` is None when the builtin was passed as a module (then it has no sizes of its own)."""
    if args and isinstance(args[0], Const):  # `sqrt(e)` of a dimension: a number
        return Const(_folded(b.fold, args[0].value))
    if b.lowering is None:
        return plan.add(b.primitives[0], (args[0],), e.span)
    return LOWERINGS[b.lowering](plan, tprog, f, b, e, args)


def _folded(fold, v: float) -> float:
    """A builtin on a number as its primitive computes it: outside its domain nan (`log(-1)`),
    too large inf (`exp(1000)`), never an exception."""
    try:
        return float(fold(v))
    except OverflowError:
        return math.inf
    except ValueError:  # math's domain errors; NumPy's log(0) is -inf
        return -math.inf if v == 0 else math.nan


def _repeat(plan: Plan, tprog: T.TProgram, f: Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """L instances one after the other: `block1`, `block2`... each with its own parameters."""
    count = repeat_count(f, e)
    x = _emit(plan, tprog, f, e.seq)
    extra = [_emit(plan, tprog, f, a) for a in e.extra]
    for i in range(1, count + 1):
        x = _call(plan, tprog, f, e.call, [x] + extra, site=f"{call_site(f, e.call)}{i}")
    return x


def _previous(plan: Plan, f: Frame, e: T.TPrim) -> Var:
    """The model's output tokens one position later: one more input of the plan, which
    training fills from the targets and generation from the model's own outputs."""
    shape = (plan.inputs[0].shape[0],) + tuple(f.size(d) for d in e.type.shape)
    if plan.previous is None:
        plan.previous = plan.new_var(shape, True, "int64")
        plan.previous_vocab, plan.previous_span = f.size(e.type.vocab), e.span
        plan.inputs.append(plan.previous)
    return plan.previous


def _call(plan: Plan, tprog: T.TProgram, f: Frame, e: T.TCall, args: list[Atom],
          carry: dict | None = None, site: str | None = None) -> Atom:
    site = site or call_site(f, e)
    if not isinstance(e.callee, T.ConfigMod):
        return _inline(plan, tprog, resolve_ref(e.callee, f), callee_dims(f, e), site, args, e,
                       carry)
    # a module argument: its sizes come from its arguments; its result's fix the rest here
    ref = f.config[e.callee.name]
    dims = ({} if isinstance(ref, T.BuiltinMod) or e.elementwise else
            bind_dims(tprog, ref, [a.shape[1:] for a in args], e.span, "", expected(f, e)))
    out = _inline(plan, tprog, ref, dims, site, args, e, carry)
    if not e.elementwise:  # what it gives fixes the sizes only it can
        check_result(f, e, ref, () if isinstance(out, Const) else
                     out.shape[1:] if out.batched else out.shape)
    return out


def _map(plan: Plan, tprog: T.TProgram, f: Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """map: the sequence axis joins the batch axis, the call runs once, and they part again."""
    xs = _emit(plan, tprog, f, e.seq)
    batch, n = xs.shape[0], xs.shape[1]
    flat = plan.add("reshape", (xs,), e.span, shape=(batch * n,) + xs.shape[2:])
    out = _call(plan, tprog, f, e.call, [flat])
    return plan.add("reshape", (out,), e.span, shape=(batch, n) + out.shape[1:])


def _scan(plan: Plan, tprog: T.TProgram, f: Frame, b: Builtin, e: T.TMap, args) -> Atom:
    """A cell along the sequence from a zero state. A cell that declares a kernel (`kernel
    rnn_scan`) runs as that one fused kernel, when its gates' activations are the kernel's
    (its language definition is the kernel's specification; tests hold the kernel to it); any
    other cell is unrolled, one inlined step per element, with parameters shared by path
    (at most MAX_SCAN steps: the checker refused more, dsl/instances.py)."""
    xs = _emit(plan, tprog, f, e.seq)
    state = tuple(f.size(d) for d in e.type.shape[1:])
    fused = scan_kernel(tprog, f, e, xs.shape[2:], SCAN_KERNELS)
    if fused is not None:
        return _fused_scan(plan, *fused, xs, state, e.span)
    batch, n = xs.shape[0], xs.shape[1]
    scan_steps(n, e.span)
    h = plan.add("fill", (Const(0.0),), e.span, batched=True, shape=(batch,) + state)
    carry: dict = {}
    steps = []
    for t in range(n):
        x = plan.add("take", (xs,), e.span, axis=1, index=t)
        h = _call(plan, tprog, f, e.call, [h, x], carry)
        steps.append(h)
    return plan.add("stack", tuple(steps), e.span, axis=1)


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
    """`_emit` lowers softmax(causal(s)) to the causal_softmax primitive; the checker refuses a
    mask anywhere else (a masked score means nothing to any other operation)."""
    raise PlanError("causal(...) reached lowering outside a softmax")


def _causal_softmax(plan: Plan, tprog, f: Frame, e: T.TPrim, masked) -> Var:
    """softmax(causal(scores)): one primitive, the mask its own part."""
    scores, span = masked
    return plan.add("causal_softmax", (_emit(plan, tprog, f, scores),), e.span)


_HOLDS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
          "<=": lambda a, b: a <= b}
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">="}


def _where(plan: Plan, tprog: T.TProgram, f: Frame, b: Builtin, e: T.TPrim, args) -> Atom:
    """where(x > y, a, b), each branch computed on safe inputs (the "double where"): where
    the other branch is chosen, the compared name (x if it is a name, else y) is replaced
    inside this branch by a point on the branch's side of the comparison, the other side + 1
    or - 1: `where(x > 0, log(x), 0)` computes log(where(x > 0, x, 1)). The branch not chosen
    is then finite wherever its value is not used, so no NaN reaches a gradient. Two numbers
    compared choose their branch here."""
    op = dict(e.attrs)["op"]
    x, y = (_emit(plan, tprog, f, side) for side in e.args[:2])
    if isinstance(x, Const) and isinstance(y, Const):
        return _emit(plan, tprog, f, e.args[2] if _HOLDS[op](x.value, y.value) else e.args[3])
    a = _branch(plan, tprog, f, e, e.args[2], (x, y, op), True)
    other = _branch(plan, tprog, f, e, e.args[3], (x, y, op), False)
    return select(plan, op, x, y, a, other, e.span)


def _branch(plan: Plan, tprog, f: Frame, e: T.TPrim, branch: T.TExpr, cond, holds: bool):
    """One branch of a where, with the compared name made safe for it (see _where)."""
    x, y, op = cond
    for name_e, value, other, rel in ((e.args[0], x, y, op), (e.args[1], y, x, _FLIP[op])):
        if not isinstance(name_e, (T.TLocal, T.TParam)) or not _uses(branch, name_e.name):
            continue
        if not same_shape_after(plan, value, other, e.span):
            continue  # the other side is larger: the name is not replaced whole
        up = (rel in (">", ">=")) == holds  # the branch's side lies above the other side
        point = binary(plan, "add" if up else "sub", other, Const(1.0), e.span)
        chosen = (value, point) if holds else (point, value)
        safe = select(plan, op, x, y, *chosen, e.span)
        keep = f.values[name_e.name]
        f.values[name_e.name] = safe
        try:
            return _emit(plan, tprog, f, branch)
        finally:
            f.values[name_e.name] = keep
    return _emit(plan, tprog, f, branch)


def _uses(e: T.TExpr, name: str) -> bool:
    """Whether the expression names `name` outside the modules it calls (their bodies see
    only their arguments)."""
    if isinstance(e, (T.TLocal, T.TParam)):
        return e.name == name
    if isinstance(e, T.TMap):
        return _uses(e.seq, name) or any(_uses(a, name) for a in e.extra)
    return any(_uses(a, name) for a in getattr(e, "args", ()))


# what a builtin's record names as its lowering (dsl/builtins.py)
LOWERINGS = {"last_axis": last_axis, "causal": _causal, "reduce_all": reduce_all,
             "reduce_sequence": reduce_sequence, "token": token, "volume": volume,
             "heads": heads, "map": _map, "scan": _scan, "repeat": _repeat,
             "dropout": dropout, "where": _where}
