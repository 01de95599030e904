"""Stage 2, after every definition: how the modules use one another. Lowering inlines every
use of a module (docs/architecture.md), recursing through the uses and the expressions around
them, so a module may not use itself, directly or through others (it would never end), and
modules may nest only MAX_NESTING deep, and MAX_DEPTH deep counting the expressions each use is
inside too (lowering takes at most 8 Python frames a module and 2 an expression, within the
recursion limit the parser sets). The walks are iterative: a chain of modules may be long.
"""

from __future__ import annotations

from typing import NamedTuple

from . import typed as T
from .build_ast import MAX_DEPTH
from .errors import DpError, Span

MAX_NESTING = 200


class Use(NamedTuple):
    """One use of a module in a definition: where, how when it is not called there (`passed
    to Twice as 'f'`), and inside how many expressions of its definition."""

    module: str
    span: Span | None
    how: str
    depth: int


def module_graph_errors(tdefs: dict[str, T.TDef]) -> list[DpError]:
    """The cycles of uses, each once at the use that closes it; without any, the chains of
    modules nested too deep, each at the use one level too deep."""
    edges = {name: [u for u in uses(t) if u.module in tdefs] for name, t in tdefs.items()}
    errors = _cycles(edges)
    if not errors:
        errors = _too_deep(edges, lambda u: 1, MAX_NESTING, "modules")
    return errors or _too_deep(edges, lambda u: 1 + u.depth, MAX_DEPTH, "levels",
                               "the levels count the modules and the expressions each use of a "
                               "module is inside")


def uses(tdef: T.TDef) -> list[Use]:
    """The modules a definition uses, in source order: its calls, the modules passed at a call
    (`Wrap(x; f = Net)`) and its configuration's defaults."""
    found: list[Use] = []
    for c in tdef.config:
        if c.default is not None:
            found.extend(Use(n, c.span, how or f"the default of '{c.name}'", 0)
                         for n, how in _ref_names(c.default))
    stack = [(e, 0) for _, e in tdef.lets] + [(tdef.result, 0)]
    while stack:
        e, depth = stack.pop()
        if isinstance(e, T.TMap):
            stack.extend((x, depth + 1) for x in (e.call, e.seq) + tuple(e.extra))
            continue
        if isinstance(e, T.TCall):
            found.extend(Use(n, e.span, how, depth) for n, how in _ref_names(e.callee))
        stack.extend((x, depth + 1) for x in getattr(e, "args", ()))
    return sorted(found, key=lambda u: (u.span.line, u.span.col) if u.span else (0, 0))


def _ref_names(ref: T.ModRef) -> list[tuple[str, str]]:
    """The modules a reference names: itself (how: "") and what its configuration binds
    (how: `passed to Twice as 'f'`)."""
    out, stack = [], [(ref, "")]
    while stack:
        r, how = stack.pop()
        if isinstance(r, T.GlobalMod):
            out.append((r.name, how))
            stack.extend((v, f"passed to {r.name} as '{k}'") for k, v in r.config)
    return out


def _cycles(edges: dict[str, list]) -> list[DpError]:
    """A depth-first walk; a use of a module still being walked closes a cycle."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    errors, seen = [], set()
    for root in edges:
        if root in state:
            continue
        path, hows, todo = [root], [], [iter(edges[root])]
        state[root] = 1
        while todo:
            step = next(todo[-1], None)
            if step is None:
                state[path.pop()] = 2
                hows[-1:] = []
                todo.pop()
                continue
            name, span, how, _ = step
            if state.get(name) == 1:
                at = path.index(name)
                steps = [_step(n, h) for n, h in zip(path[at + 1:] + [name], hows[at:] + [how])]
                if frozenset(path[at:]) not in seen:
                    seen.add(frozenset(path[at:]))
                    errors.append(_cycle_error([name] + steps, span))
            elif name not in state:
                state[name] = 1
                path.append(name)
                hows.append(how)
                todo.append(iter(edges[name]))
    return errors


def _step(name: str, how: str) -> str:
    return f"{name} ({how})" if how else name


def _cycle_error(cycle: list[str], span: Span | None) -> DpError:
    return DpError("type", f"{cycle[0]} uses itself: {' -> '.join(cycle)}", span, (
        "a module is copied into each module that uses it, so one that uses itself would "
        "never end",
        "for many layers of one block, use repeat(L, Block, x)"))


def _too_deep(edges: dict[str, list[Use]], cost, limit: int, unit: str,
              *notes: str) -> list[DpError]:
    """Each module's height (1 for one that uses none, else the cost of its deepest use and
    that module's height), then from every module no other uses, its deepest chain down to the
    use past the limit."""
    height: dict[str, int] = {}
    deepest: dict[str, Use | None] = {}
    for root in edges:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in height:
                stack.pop()
                continue
            todo = [u.module for u in edges[name] if u.module not in height]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            best = max(edges[name], key=lambda u: cost(u) + height[u.module], default=None)
            height[name] = cost(best) + height[best.module] if best else 1
            deepest[name] = best
    used = {u.module for targets in edges.values() for u in targets}
    errors, seen = [], set()
    for root in edges:
        if root in used or height[root] <= limit:
            continue
        chain, total = [root], 1
        while total <= limit:
            use = deepest[chain[-1]]
            chain.append(use.module)
            total += cost(use)
        if use.span not in seen:
            seen.add(use.span)
            errors.append(_depth_error(chain, use.span, total, limit, unit, notes))
    return errors


def _depth_error(chain: list[str], span: Span | None, total: int, limit: int, unit: str,
                 notes: tuple[str, ...]) -> DpError:
    shown = chain if len(chain) <= 5 else chain[:2] + ["..."] + chain[-2:]
    return DpError("limit", f"{chain[-1]} is nested {total} {unit} deep here, more than the "
                   f"limit of {limit}: {' -> '.join(shown)}", span, notes + (
                       "for many layers of one block, use repeat(L, Block, x)",))
