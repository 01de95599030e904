"""Syntax errors in words: what the parser found and what it could have taken, at the line and
column of the offending token, and a line dedented to a column no enclosing block has."""

from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput

from .errors import DpError, Span, plural, source_lines

TAB_LEN = 8  # the columns a tab counts for in indentation


class BadDedent(Exception):
    """A line dedented to a column no enclosing block is indented to (lark's DedentError)."""

    def __init__(self, token: Token, indent: str, columns: list[int]):
        super().__init__(indent)
        self.token, self.indent, self.columns = token, indent, columns


# Friendly names for the terminals lark reports as expected.
_TOKEN_NAMES = {
    "NAME": "a name", "CALLNAME": "a call", "NUMBER": "a number", "INT": "an integer",
    "STRING": "a string", "_NL": "end of line", "_INDENT": "an indented block",
    "_DEDENT": "end of block", "$END": "end of file", "LPAR": "'('", "RPAR": "')'",
    "COLON": "':'", "EQUAL": "'='", "COMMA": "','", "SEMICOLON": "';'", "RARROW": "'->'",
    "CIRCUMFLEX": "'^'", "TILDE": "'~'", "LSQB": "'['", "RSQB": "']'", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'",
}


def _describe(tok: Token | None) -> str:
    if tok is None or tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    if tok.type in ("_INDENT", "_DEDENT"):
        return "a change of indentation"
    return f"'{tok.value}'"


def _terminal_text(name: str, terminals) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    for t in terminals:
        if t.name == name and t.pattern.type == "str":
            return f"'{t.pattern.value}'"
    return name.lower()


def _expected(names, terminals) -> str:
    """The terminals the parser could take. Lark's anonymous ones (`->`, `//`) are left out,
    as LALR may list them where they cannot come, unless nothing else is expected."""
    names = set(names)
    shown = {n for n in names if not n.startswith("__")} or {
        n for n in names if not _terminal_text(n, terminals).startswith("__")}
    words = sorted({_terminal_text(n, terminals) for n in shown},
                   key=lambda w: (not w.startswith("')"), w))
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def syntax_error(err: UnexpectedInput, file: str, text: str, terminals) -> DpError:
    """The error for what lark could not parse; `terminals` are the grammar's, to name them."""
    lines = source_lines(text) or [""]
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        return DpError("syntax", f"unexpected character {ch!r}", span)
    tok = getattr(err, "token", None)
    if tok is None or tok.type == "$END" or getattr(tok, "line", None) in (None, -1):
        line = len(lines)
        col = len(lines[-1]) + 1
        span = Span(file, line, col, line, col + 1)
        found = "end of file"
    else:
        span = Span(file, tok.line, tok.column, tok.end_line or tok.line,
                    tok.end_column or tok.column + 1)
        found = _describe(tok)
        if tok.type in ("_NL", "_DEDENT", "_INDENT"):
            line = min(tok.line, len(lines))
            col = len(lines[line - 1]) + 1 if tok.type == "_NL" else tok.column
            span = Span(file, line, col, line, col + 1)
            if tok.type != "_NL" and _at_end(lines, line, col):  # the block's end is the file's
                found = "end of file"
    expected = _expected(getattr(err, "expected", None) or getattr(err, "allowed", ()),
                         terminals)
    msg = f"unexpected {found}" + (f"; expected {expected}" if expected else "")
    return DpError("syntax", msg, span)


def _at_end(lines: list[str], line: int, col: int) -> bool:
    """Whether nothing but blanks and comments follows line:col."""
    rest = [lines[line - 1][col - 1:]] + lines[line:]
    return all(not r.strip() or r.lstrip().startswith("#") for r in rest)


def dedent_error(err: BadDedent, file: str, text: str) -> DpError:
    """The line's indentation, and the indentations of the blocks around it that would do."""
    line, indent = err.token.end_line, err.indent
    tabs, spaces = indent.count("\t"), indent.count(" ")
    said = plural(spaces, "space")
    if tabs:
        width = spaces + tabs * TAB_LEN
        said = plural(tabs, "tab") + (f" and {said}" if spaces else "") + f" ({width} spaces)"
    columns = " or ".join(str(c) for c in err.columns)
    notes = (f"the enclosing blocks are indented by {columns} spaces; indent it like one of them",)
    margins = [ln[:len(ln) - len(ln.lstrip(" \t"))] for ln in text.split("\n")[:line]]
    if any("\t" in m for m in margins):
        notes += (f"a tab counts as {TAB_LEN} spaces: indent with spaces only",)
    return DpError("syntax", f"this line is indented by {said}, which matches no enclosing block",
                   Span(file, line, 1, line, 1 + len(indent)), notes)
