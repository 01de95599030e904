"""Where the sizes of a shape error came from: notes that say, for each dimension the message
shows, the type it was read from, and what fixed each variable in it (the `Fixed` records that
unification keeps where it binds a variable, dims.py).

    = note: 64 is the size of x, from the type of Digits at line 5 (Digits: R^64 -> R^10)
    = note: 32 is Small's input size, declared at line 2 (Small: R^32 -> R^10)
    = note: Pair's n = k, from the type of x at line 6

A callee's variable is written `Pair's n`; the caller's own is written bare, or `Net's n` when
the callee has one of the same name.
"""

from __future__ import annotations

from typing import NamedTuple

from .dims import Dim, DimVar, dim_text, fixed_of, ordered_vars, resolve
from .errors import Span, where

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


class Source(NamedTuple):
    """Where a type was written: `subject` names it (`Small's input`, `the expected type`),
    `tail` says where (`declared at line 2 (Small: R^32 -> R^10)`)."""

    subject: str
    tail: str


def at(span: Span | None, file: str) -> str:
    """`line 7` in the error's own file, `stdlib/layers.dp:12` in another."""
    if span is None:
        return "an unknown place"
    return f"line {span.line}" if span.file == file else where(span)


def ordinal(i: int) -> str:
    return _ORDINALS[i] if i < len(_ORDINALS) else f"{i + 1}th"


def size_of(subject: str, axis: int | None, rank: int) -> str:
    """`Small's input size`, `the second size of W`, `a size of x`."""
    if rank <= 1:
        return f"{subject} size" if "'s " in subject else f"the size of {subject}"
    return f"{'a size' if axis is None else f'the {ordinal(axis)} size'} of {subject}"


def dim_notes(sides, s: dict, owner: str, file: str) -> list[str]:
    """The notes for dimensions of a message: `sides` are (dimension as unified, Source or
    None, axis, rank), `s` the substitution at the failure, `owner` the definition being
    checked (whose variables are rigid), `file` the error's file. Each side's note is followed
    by what fixed the callee variables in it."""
    bound = [_bindings([d], s) for d, *_ in sides]
    shown = {v.name for b in bound for v, _ in b} | {
        v.name for d, *_ in sides for v in ordered_vars(resolve(d, s)) if not v.rigid}

    def text(d: Dim) -> str:
        return dim_text(d, lambda v: f"{owner}'s {v.name}" if v.rigid and v.name in shown
                        else v.label)

    notes = []
    for (d, source, axis, rank), fixed in zip(sides, bound, strict=True):
        if source is not None:
            notes.append(f"{text(resolve(d, s))} is {size_of(source.subject, axis, rank)}"
                         f"{', ' if source.tail else ''}{source.tail}")
        for v, why in fixed:
            notes.append(f"{v.label} = {text(resolve(v, s))}, from {why.text} at "
                         f"{at(why.span, file)}")
    return list(dict.fromkeys(notes))


def _bindings(dims: list[Dim], s: dict) -> list[tuple[DimVar, object]]:
    """Each callee variable in `dims` (and in what they were bound to) that something fixed,
    with what fixed it, in the order they are met."""
    fixed = fixed_of(s)
    todo = [v for d in dims for v in ordered_vars(d)]
    seen, out = set(), []
    while todo:
        v = todo.pop(0)
        if v in seen or v.rigid or v not in s:
            continue
        seen.add(v)
        if v in fixed:
            out.append((v, fixed[v]))
        todo.extend(ordered_vars(s[v]))
    return out
