"""Colour on a terminal: error messages with their source line highlighted as dp, and the lexer
of the REPL's input line.

Colour is for people only: a stream that is not a terminal, or a set NO_COLOR (no-color.org)
or TERM=dumb, gets format_error's text unchanged, byte for byte. Colouring only wraps the
pieces of that text in ANSI codes, so with the codes removed it is the plain text again.
Pygments is imported only when something is coloured.
"""

from __future__ import annotations

import functools
import os

from dp.dsl.errors import DpError, DpErrors, format_error, read_source

_RED, _BLUE, _BOLD, _RESET = "\x1b[1;31m", "\x1b[1;34m", "\x1b[1m", "\x1b[0m"


def wants_colour(stream) -> bool:
    """Whether text written to `stream` may be coloured."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def colour_error(err: DpError, sources: dict[str, str] | None = None) -> str:
    """format_error's text in colour, for a stream that `wants_colour`."""
    errors = err.errors if isinstance(err, DpErrors) else [err]
    return "\n".join(_coloured(e, sources) for e in errors)


def _coloured(err: DpError, sources: dict[str, str] | None) -> str:
    """One error as format_error renders it, with the header, the gutter, the carets and the
    notes in colour and the source line highlighted in the context of its whole file."""
    lines = format_error(err, sources).split("\n")
    head = f"error[{err.kind}]:"
    lines[0] = f"{_RED}{head}{_RESET}{_BOLD}{lines[0][len(head):]}{_RESET}"
    span = err.span
    for i, line in enumerate(lines):
        if span is not None and line == f"  --> {span.file}:{span.line}:{span.col}":
            lines[i] = f"  {_BLUE}-->{_RESET} {line[6:]}"
            number, gutter = str(span.line), " " * len(str(span.line))
            code = lines[i + 2:i + 4] if len(lines) >= i + 4 else []
            if lines[i + 1:i + 2] == [f" {gutter} |"] and len(code) == 2 \
                    and code[0].startswith(f" {number} | ") \
                    and code[1].startswith(f" {gutter} | "):
                source = _highlighted(err, sources, code[0][len(number) + 4:])
                lines[i + 1] = f" {gutter} {_BLUE}|{_RESET}"
                lines[i + 2] = f" {_BLUE}{number} |{_RESET} {source}"
                lines[i + 3] = f" {gutter} {_BLUE}|{_RESET} {_RED}{code[1][len(gutter) + 4:]}" \
                               f"{_RESET}"
            break
    for i, line in enumerate(lines):
        if line.startswith("   = note:"):
            lines[i] = f"   {_BOLD}= note:{_RESET}{line[len('   = note:'):]}"
    return "\n".join(lines)


def _highlighted(err: DpError, sources: dict[str, str] | None, shown: str) -> str:
    """The source line `shown` (as format_error shows it) coloured by the tokens of its file
    lexed whole, so a line inside a train block is coloured as one; `shown` as it was if the
    tokens do not give it back exactly."""
    from pygments import format as pygments_format
    from pygments.formatters.terminal import TerminalFormatter

    text = (sources or {}).get(err.span.file)
    if text is None:
        text = read_source(err.span.file)
    if text is None:
        return shown
    tokens = _line_tokens(text, err.span.line)
    if "".join(v for _, v in tokens) != shown:
        return shown
    return pygments_format(tokens, TerminalFormatter(colorscheme=_scheme())).rstrip("\n")


def _line_tokens(text: str, number: int) -> list:
    """The tokens of line `number` (from 1) of `text`, split at newlines, tabs shown as
    format_error shows them (one space) and a carriage return at the end dropped. The REPL's
    lexer serves files too (no line of a program starts with `:`)."""
    line, out = 1, []
    for _, token, value in repl_lexer()(stripnl=False).get_tokens_unprocessed(text):
        for k, piece in enumerate(value.split("\n")):
            line += k > 0
            if line == number and piece:
                out.append((token, piece.expandtabs(1)))
        if line > number:
            break
    if out and out[-1][1].endswith("\r"):  # a line ended by "\r\n"
        token, last = out.pop()
        if last[:-1]:
            out.append((token, last[:-1]))
    return out


def _scheme() -> dict:
    """Pygments' terminal colours, with module names plain green (not underlined) and the
    settings of a train block apart from the builtins."""
    from pygments.formatters.terminal import TERMINAL_COLORS
    from pygments.token import Name

    return {**TERMINAL_COLORS, Name.Class: ("green", "brightgreen"),
            Name.Attribute: ("magenta", "brightmagenta")}


@functools.cache
def repl_lexer():
    """The lexer of the REPL's input: dp, and the session's commands (`:load FILE`)."""
    from dp.dsl.pygments_lexer import DpLexer
    from pygments.lexer import bygroups, inherit
    from pygments.token import Keyword, Punctuation, String, Text

    class ReplLexer(DpLexer):
        name, aliases, filenames = "dp REPL", [], []
        tokens = {"root": [
            (r"^([ \t]*)(:)(load)([ \t]+)(.*)$",
             bygroups(Text, Punctuation, Keyword.Pseudo, Text, String)),
            (r"^([ \t]*)(:)([a-z]+)", bygroups(Text, Punctuation, Keyword.Pseudo)),
            inherit,
        ]}

    return ReplLexer
