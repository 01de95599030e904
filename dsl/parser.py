"""Stage 1: source text -> ast.Program (lark LALR with an indenter; spans on every node).

Syntax errors become DpError('syntax') that say what was found and what was expected, at the
line and column of the offending token (the last line for an unexpected end of file); a line
dedented to a column no enclosing block has is one too. No exception of lark's gets out.

The tree becomes the AST in build_ast.py (which also bounds its depth: MAX_DEPTH), and
syntax errors are put in words in syntax_errors.py.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedInput
from lark.grammar import Rule
from lark.indenter import Indenter
from lark.lexer import TerminalDef

from . import ast, cache
from .build_ast import MAX_DEPTH, ToAst
from .errors import DpError, Span, source_lines
from .syntax_errors import TAB_LEN, BadDedent, dedent_error, syntax_error

# Python frames one level may cost in a later stage (at most 4 measured: the checker's call of a
# module, lowering a configuration argument), doubled; and frames for the callers (CLI, REPL,
# pytest). Not higher: a limit far above what is used turns a runaway recursion into a crash.
_FRAMES_PER_LEVEL = 8
sys.setrecursionlimit(max(sys.getrecursionlimit(), MAX_DEPTH * _FRAMES_PER_LEVEL + 2000))


class _DpIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = TAB_LEN

    def handle_NL(self, token: Token):
        """lark's, but a dedent to an unknown column is found before any block is closed, and
        reported with the line and the columns that would do."""
        if self.paren_level > 0:
            return
        yield token
        indent_str = token.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos(self.INDENT_type, indent_str, token)
            return
        if indent not in self.indent_level:
            raise BadDedent(token, indent_str, list(self.indent_level))
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield Token.new_borrow_pos(self.DEDENT_type, indent_str, token)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The parser. Building its tables takes lark longer than parsing a program, so they are
    kept in the cache (cache.py) from one run to the next."""
    try:
        tables = cache.cached("grammar", cache.front_end_key(), _tables)
        return Lark._load_from_dict(tables["data"], tables["memo"], postlex=_DpIndenter())
    except Exception:  # what was kept is damaged: build the parser, as if nothing were kept
        return _build()


def _build() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", postlex=_DpIndenter(), propagate_positions=True,
                maybe_placeholders=True, start=["start", "repl_input"])


def _tables() -> dict:
    """lark's parser as data (what `Lark.save` would pickle), without the indenter."""
    data, memo = _build().memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k != "postlex"}
    return {"data": data, "memo": memo}


def parse(text: str, file: str = "<input>") -> ast.Program:
    """Parse one .dp source text; raises DpError('syntax') on malformed input."""
    if not text.endswith("\n"):
        text += "\n"
    return _parse(text, file, "start")


def parse_input(text: str, file: str, line: int, col: int = 1) -> ast.Expr | ast.Let:
    """One line typed at the REPL: an expression (`x: R^8`, an ascribed name, declares a value)
    or `name = expr`. `line` and `col` place it in the session's text, so that spans point at
    the input as typed."""
    # lark counts lines and columns in ignored text too: escaped line breaks and spaces move the
    # input to its place without opening an indented block
    padded = "\\\n" * (line - 1) + " " * (col - 1) + text.rstrip("\r\n") + "\n"
    try:
        return _parse(padded, file, "repl_input")
    except DpError as err:  # the input is one line: its end is not a file's
        raise DpError(err.kind, err.message.replace("end of file", "end of input"), err.span,
                      err.notes) from None


def _parse(text: str, file: str, start: str):
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as err:
        raise syntax_error(err, file, text, _lark().terminals) from None
    except BadDedent as err:
        raise dedent_error(err, file, text) from None
    except LarkError as err:  # none is known to reach here: a message, not a traceback
        lines = source_lines(text) or [""]
        end = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        raise DpError("syntax", f"cannot parse this text: {err}", end) from None
    return ToAst(file).build(tree)
