"""The graph `dp show` draws (diagram_draw.py): a module as a frame titled with its signature.
Inside: its inputs, one box per call site (the callee, its signature as instantiated there, its
configuration and parameter count), a small node per builtin operation, its own parameters and
its output, joined by arrows that carry the types. `build` makes that graph from the typed
program, so it is tested without images; `build_failed` makes it for a module that does not
check, up to the step where the types disagree (the checker's `Partial`): that step's arrow is
marked, with the type given and the one expected written on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dp.dsl import typed as T
from dp.dsl.check_body import Partial

from .structure import (
    Scope,
    callee_text,
    count_under,
    open_sizes,
    param_counts,
    ref_text,
    site_name,
)

_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}


@dataclass
class Node:
    kind: str  # input, param, call (a box), op (a builtin), value (a type on an arrow), output,
    # mismatch (the types that disagree, on the arrow where they do)
    lines: tuple[str, ...]


@dataclass
class Diagram:
    title: str
    subtitle: str
    footer: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    boxes: int = 0
    total: int | None = None  # parameters, when the sizes are concrete
    marked: set = field(default_factory=set)  # the edges where the types disagree


# --- the graph ----------------------------------------------------------------------------------
def build(tprog: T.TProgram, tdef: T.TDef) -> Diagram:
    """The module's dataflow: every value flows from the node that makes it, through a `value`
    node (the type written on the arrow), to the nodes that use it."""
    return _Builder(tprog, tdef).diagram


def build_failed(partial: Partial) -> Diagram:
    """The dataflow of a module that does not check, up to its failing step: every value known
    there, the step itself, and the marked arrow from the argument that does not fit."""
    return _Builder(None, partial.tdef, partial).diagram


class _Builder:
    def __init__(self, tprog: T.TProgram | None, tdef: T.TDef, failed: Partial | None = None):
        self.tprog, self.tdef, self.scope = tprog, tdef, Scope.top(tdef)
        self.counts = None if tprog is None else param_counts(tprog, tdef)
        self.diagram = Diagram(f"{tdef.name}: {tdef.sig}", _subtitle(tdef), "")
        self.named: set[int] = set()
        self.carried: dict[str, int] = {}
        self.env = {n: self.add("input", f"{n}: {t}")
                    for n, t in zip(tdef.inputs, tdef.sig.args, strict=True)}
        self.params = {p.name: self.add("param", *self.param_lines(p)) for p in tdef.params}
        carries = dict(tdef.carries)
        for name, e in tdef.lets:
            v = self.value(e)
            if self.diagram.nodes[v].kind == "value" and v not in self.named:
                self.diagram.nodes[v].lines = (f"{name}: {self.scope.type(e.type)}",)
                self.named.add(v)
            self.env[name] = v
            if name in carries:
                self.edge(v, self.add("output", f"{name} to the next step"))
        if failed is not None:
            self.failure(failed)
            return
        out = self.value(tdef.result)
        label = f"output: {tdef.sig.result}"
        if self.diagram.nodes[out].kind == "value" and out not in self.named:
            self.diagram.nodes[out] = Node("output", (label,))
        else:
            self.edge(out, self.add("output", label))
        if self.counts is None:
            self.diagram.footer = ("parameter counts need concrete sizes for "
                                   + ", ".join(open_sizes(tdef)))
        else:
            self.diagram.total = sum(self.counts.values())
            self.diagram.footer = f"{self.diagram.total:,} parameters in total"

    def failure(self, p: Partial) -> None:
        sources = [self.value(a) for a in p.args]
        step = self.add(p.kind, *p.lines)
        for i, source in enumerate(sources):
            if i != p.bad:
                self.edge(source, step)
                continue
            bad = self.add("mismatch", f"{p.got} → expects {p.want}")
            self.edge(source, bad)
            self.edge(bad, step)
            self.diagram.marked |= {(source, bad), (bad, step)}
        self.diagram.footer = (f"{self.tdef.name} does not check: the types disagree at the red "
                               "arrow")

    def add(self, kind: str, *lines: str) -> int:
        self.diagram.nodes.append(Node(kind, tuple(lines)))
        self.diagram.boxes += kind == "call"
        return len(self.diagram.nodes) - 1

    def edge(self, a: int, b: int) -> None:
        if (a, b) not in self.diagram.edges:
            self.diagram.edges.append((a, b))

    def param_lines(self, p: T.TParamDecl) -> list[str]:
        lines = [f"param {p.name}: {self.scope.type(p.type)} ~ {p.init}"]
        if self.counts is not None:
            lines.append(f"{self.counts[f'{self.tdef.name}.{p.name}']:,} parameters")
        return lines

    def local(self, name: str) -> int:
        """A data argument or let; a carried name before its let is the previous step's."""
        if name in self.env:
            return self.env[name]
        if name not in self.carried:
            t = self.scope.type(dict(self.tdef.carries)[name])
            self.carried[name] = self.add("input", f"{name}: {t} from the previous step")
        return self.carried[name]

    def value(self, e: T.TExpr) -> int:
        """The node whose output is e's value (drawing what computes it on the way)."""
        if isinstance(e, T.TLocal):
            return self.local(e.name)
        if isinstance(e, T.TParam):
            return self.params[e.name]
        const = self.const(e)
        if const is not None:
            return self.node("op", e, [], const)
        if isinstance(e, T.TMap):
            return self.node("call", e, [e.seq, *e.extra], *self.box_lines(e.call, e))
        if isinstance(e, T.TCall):
            if self.scope.is_layer(e):
                return self.node("call", e, e.args, *self.box_lines(e, None))
            return self.node("op", e, e.args, *self.function_lines(e))
        if not e.args:  # `previous`: the module's own earlier output, a source like an input
            return self.add("input", f"{e.op}: {self.scope.type(e.type)}")
        if e.op in _SYMBOLS and len(e.args) == 2:
            a, b = e.args
            ca, cb = self.const(a), self.const(b)
            if cb is not None:
                return self.node("op", e, [a], f"{_SYMBOLS[e.op]} {_paren(cb)}")
            if ca is not None:
                return self.node("op", e, [b], f"{_paren(ca)} {_SYMBOLS[e.op]}")
            return self.node("op", e, e.args, _SYMBOLS[e.op])
        attrs = ", ".join(f"{k} = {self.scope.size(v)}" for k, v in e.attrs if v is not None)
        return self.node("op", e, e.args, f"{e.op}({attrs})" if attrs else e.op)

    def node(self, kind: str, e, args, *lines: str) -> int:
        """A box or op computing e from args, and the value it gives (the type on its arrow)."""
        sources = [self.value(a) for a in args]  # first, so nodes are numbered as they run
        n = self.add(kind, *lines)
        for source in sources:
            self.edge(source, n)
        v = self.add("value", str(self.scope.type(e.type)))
        self.edge(n, v)
        return v

    def const(self, e) -> str | None:
        """A scalar that depends on no value (`sqrt(d / heads)`), as text to fold into its op."""
        if isinstance(e, T.TConst):
            return f"{e.value:g}"
        if not isinstance(e, T.TPrim) or e.type.rank or e.type.vocab is not None:
            return None
        if e.op == "dim":
            return str(self.scope.size(dict(e.attrs)["value"]))
        parts = [self.const(a) for a in e.args]
        if not parts or None in parts:
            return None
        if e.op in _SYMBOLS and len(parts) == 2:
            return f"{_paren(parts[0])} {_SYMBOLS[e.op]} {_paren(parts[1])}"
        return f"{e.op}({', '.join(parts)})"

    def function_lines(self, call: T.TCall) -> list[str]:
        """A function applied elementwise (`act`, `mask`) or a builtin: one small node."""
        if isinstance(call.callee, T.ConfigMod):
            ref = self.scope.ref(call.callee)
            default = [] if isinstance(ref, T.ConfigMod) else [f"default: {ref_text(ref)}"]
            return [call.callee.name, *default]
        return [ref_text(call.callee)]

    def box_lines(self, call: T.TCall, wrap: T.TMap | None) -> list[str]:
        s, name = self.scope, site_name(self.tdef, call)
        ref = s.ref(call.callee)
        what = callee_text(s, call)
        if wrap is not None:
            what = (f"repeat {s.size(wrap.count)} × {what}" if wrap.kind == "repeat"
                    else f"{wrap.kind} {what}")
        lines = [name, f"{what}: {s.signature(call)}"]
        if isinstance(ref, T.ConfigMod):
            lines += [] if "module argument" in what else ["a module argument"]
        elif isinstance(call.callee, T.ConfigMod):
            lines.append(f"{call.callee.name} = {ref_text(ref)}")
        else:
            given = {v.name: s.size(fv) for v, fv in call.dims}
            sizes = self.tprog.sizes if self.tprog is not None else {}
            parts = [f"{n} = {given[n]}" for n in sizes.get(ref.name, ()) if n in given]
            parts += [f"{k} = {ref_text(v, s.size)}" for k, v in call.callee.config]
            lines += _wrap(parts, 48)
        if self.counts is not None:
            path = f"{self.tdef.name}.{name}"
            paths = ([f"{path}{i}" for i in range(1, s.size(wrap.count) + 1)]
                     if wrap is not None and wrap.kind == "repeat" else [path])
            n = sum(count_under(self.counts, p) for p in paths)
            lines.append(f"{n:,} parameters" if n else "no parameters")
        return lines


def _wrap(parts: list[str], width: int) -> list[str]:
    """`k = 3, s = 2, ...` in lines of at most `width` characters, broken after commas."""
    lines: list[str] = []
    for part in ", ".join(parts).split(", ") if parts else []:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return lines


def _paren(text: str) -> str:
    """Brackets around `d / heads` as an operand; `sqrt(d / heads)` needs none."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == " " and depth == 0:
            return f"({text})"
    return text


def _subtitle(tdef: T.TDef) -> str:
    parts = [f"{n} = {d}" if d is not None else n for n, _, d in tdef.sizes]
    parts += [f"{c.name} = {ref_text(c.default)}" if c.default is not None
              else f"{c.name}: {c.sig}" for c in tdef.config]
    implements = f"implements {tdef.implements}" if tdef.implements else ""
    return "; ".join(p for p in (implements, ", ".join(parts)) if p)
