"""Errors every stage raises, and the one renderer that prints them (docs/architecture.md, Errors).

A DpError carries a kind (`syntax`, `name`, `shape`, `type`, `arity`, `data`, `checkpoint`,
`usage`, `numeric`, `limit`, `resource`, ...), a message saying what was expected against what
was found, an optional span into a source file, and notes. `format_error` renders it as

    error[shape]: FeedForward expects R^64 here, but x is R^32
      --> programs/bad.dp:7:9
       |
     7 |     h = FeedForward(x)
       |         ^^^^^^^^^^^^^^
       = note: ...
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import dp.stdlib

_STDLIB = Path(dp.stdlib.__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Span:
    """A region of one source file; lines and columns count from 1, `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int


def suggest(name: str, known) -> tuple[str, ...]:
    """A note naming the closest known name, if one is close: `did you mean 'relu'?`."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return (f"did you mean '{close[0]}'?",) if close else ()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class DpError(Exception):
    """The only exception a user should ever see rendered (never as a traceback)."""

    exit_code = 1

    def __init__(self, kind: str, message: str, span: Span | None = None,
                 notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.span = span
        self.notes = tuple(notes)

    def with_note(self, note: str) -> "DpError":
        err = DpError(self.kind, self.message, self.span, self.notes + (note,))
        err.exit_code = self.exit_code
        return err

    def __str__(self) -> str:
        return format_error(self)


class DpErrors(DpError):
    """Several errors found in one pass (the checker goes on after the first)."""

    def __init__(self, errors: list[DpError]):
        first = errors[0]
        super().__init__(first.kind, first.message, first.span, first.notes)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(format_error(e) for e in self.errors)


def where(span: Span) -> str:
    """`file:line` for notes; the standard library's files as `stdlib/NAME`, wherever installed."""
    path = Path(span.file)
    shown = f"stdlib/{path.name}" if path.resolve().parent == _STDLIB else span.file
    return f"{shown}:{span.line}"


def read_source(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def source_lines(text: str) -> list[str]:
    """The lines of a source as the parser counts them: split at "\n" only (str.splitlines
    also splits at form feeds and other separators, which would put a message under the
    wrong line), a "\r" before it dropped, no empty line after a final newline."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if text.endswith("\n") else lines


def format_error(err: DpError, sources: dict[str, str] | None = None) -> str:
    """Render one error; `sources` maps file names to text (else the file is read)."""
    if isinstance(err, DpErrors):
        return "\n".join(format_error(e, sources) for e in err.errors)
    out = [f"error[{err.kind}]: {err.message}"]
    span = err.span
    if span is not None:
        out.append(f"  --> {span.file}:{span.line}:{span.col}")
        text = (sources or {}).get(span.file)
        if text is None:
            text = read_source(span.file)
        lines = source_lines(text) if text is not None else []
        if 1 <= span.line <= len(lines):
            src = lines[span.line - 1].expandtabs(1)
            width = len(str(span.line))
            end = span.end_col if span.end_line == span.line else len(src) + 1
            carets = max(1, min(end, len(src) + 1) - span.col)
            pad = " " * width
            out.append(f" {pad} |")
            out.append(f" {span.line} | {src}")
            out.append(f" {pad} | {' ' * (span.col - 1)}{'^' * carets}")
    for note in err.notes:
        out.append(f"   = note: {note}")
    return "\n".join(out)
