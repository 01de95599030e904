"""Stage 1: source text -> ast.Program (lark LALR with an indenter; spans on every node).

Syntax errors become DpError('syntax') that say what was found and what was expected, at the
line and column of the offending token (the last line for an unexpected end of file); a line
dedented to a column no enclosing block has is one too. No exception of lark's gets out.

Depth limit. Every later stage (the checker, dimension arithmetic, lowering, rendering) walks an
expression tree recursively, so the parser bounds its depth: an expression, type or dimension
may nest at most MAX_DEPTH levels. A name, number or string is one level; each bracket, each link
of a chain (`a + b + c` is two: chains lean left, `(a + b) + c`), each application (`W x`),
unary minus, index, call, ascription, type constructor and dimension operator adds one. A sum of
MAX_DEPTH terms is allowed, one more term is an `error[limit]` at the place the limit is passed:
the operator and term of a chain's link, the argument of an application, the index of `E[i]`,
else the first character of the construct (`-`, `(`, a call's name), counting levels from the
innermost term outwards. The parser builds the tree with an explicit stack (no recursion), and
raises Python's recursion limit (never lowers it) so that every later stage copes with a tree
at the limit (tests/test_parser_limits.py runs one through check, lowering and execution).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput
from lark.indenter import Indenter

from . import ast
from .errors import DpError, Span, plural

MAX_DEPTH = 1000
# Python frames one level may cost in a later stage (at most 4 measured: the checker's call of a
# module, lowering a configuration argument), doubled; and frames for the callers (CLI, REPL,
# pytest). Not higher: a limit far above what is used turns a runaway recursion into a crash.
_FRAMES_PER_LEVEL = 8
sys.setrecursionlimit(max(sys.getrecursionlimit(), MAX_DEPTH * _FRAMES_PER_LEVEL + 2000))


class _BadDedent(Exception):
    """A line dedented to a column no enclosing block is indented to (lark's DedentError)."""

    def __init__(self, token: Token, indent: str, columns: list[int]):
        super().__init__(indent)
        self.token, self.indent, self.columns = token, indent, columns


class _DpIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

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
            raise _BadDedent(token, indent_str, list(self.indent_level))
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield Token.new_borrow_pos(self.DEDENT_type, indent_str, token)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", postlex=_DpIndenter(), propagate_positions=True,
                maybe_placeholders=True, start=["start", "repl_input"])


def _span(file: str, meta) -> Span:
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _start(node) -> tuple[int, int]:
    """Where a child of the lark tree begins in the text (its brackets included)."""
    if isinstance(node, Token):
        return node.line, node.column
    m = node.meta
    return getattr(m, "container_line", m.line), getattr(m, "container_column", m.column)


def _end(node) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.end_line, node.end_column
    m = node.meta
    return (getattr(m, "container_end_line", m.end_line),
            getattr(m, "container_end_column", m.end_column))


def _ascribe(value: ast.Expr, t: ast.TypeAst) -> ast.Ascribe:
    """`e : T` without parentheses (a REPL input), spanning from e to T."""
    a, b = value.span, t.span
    return ast.Ascribe(value, t, Span(a.file, a.line, a.col, b.end_line, b.end_col))


# The rules whose node is one level of nesting; the chains, folded into one level per link.
_LEVELS = frozenset({
    "number", "name", "string", "call", "index", "neg", "ascribe", "paren", "real_type",
    "token_type", "pow_type", "tuple_type", "fn_type", "named_sig", "dim_num", "dim_name"})
_CHAINS = {
    "sum": lambda op, a, b, s: ast.BinOp(op, a, b, s),
    "product": lambda op, a, b, s: ast.BinOp(op, a, b, s),
    "app": lambda op, a, b, s: ast.Apply(a, b, s),
    "dim_sum": lambda op, a, b, s: ast.DimOp(op, a, b, s),
    "dim_prod": lambda op, a, b, s: ast.DimOp(op, a, b, s),
}


_TYPE_NODES = (ast.DimNum, ast.DimName, ast.DimOp, ast.RealType, ast.TokenType, ast.PowType,
               ast.TupleType, tuple)  # a signature is built as a tuple (sig, implements)


def _too_deep(span: Span, value) -> DpError:
    if isinstance(value, _TYPE_NODES):
        return DpError("limit", f"type nested deeper than {MAX_DEPTH} levels", span, (
            "each bracket, operator and type inside it adds a level",))
    return DpError("limit", f"expression nested deeper than {MAX_DEPTH} levels", span, (
        "each bracket, link of a chain (a + b + c has two), application, unary minus, index "
        "and call adds a level",
        "name parts of it on lines of their own (h = ...), then combine the names"))


class _ToAst:
    """One method per grammar rule or alias, given the node's `meta` (its span) and the values
    of its children; `build` walks the tree bottom-up with an explicit stack."""

    def __init__(self, file: str):
        self.file = file

    def _s(self, meta) -> Span:
        return _span(self.file, meta)

    def build(self, tree: Tree):
        """The value of `tree`, children before parents, however deep the tree is."""
        todo: list = [(tree, False)]
        values: list = []  # (value, depth) of the children built so far
        while todo:
            node, ready = todo.pop()
            if not isinstance(node, Tree):
                values.append((node, 0))
            elif not ready:
                todo.append((node, True))
                todo.extend((c, False) for c in reversed(node.children))
            else:
                n = len(node.children)
                kids = values[len(values) - n:]
                del values[len(values) - n:]
                values.append(self._node(node, kids))
        return values[0][0]

    def _node(self, node: Tree, kids: list) -> tuple:
        if node.data in _CHAINS:
            return self._chain(node, kids)
        value = getattr(self, node.data)(node.meta, [v for v, _ in kids])
        depth = max((d for _, d in kids), default=0)
        if node.data in _LEVELS:
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(self._place(node, value), value)
        return value, depth

    def _place(self, node: Tree, value) -> Span:
        """Where a construct one level too deep is shown: an index's index, a call's name, else
        its first character."""
        if node.data == "index":
            return self._between(node.children[1], node.children[1])
        if node.data == "call":
            return value.func_span
        m = node.meta
        return Span(self.file, m.line, m.column, m.line, m.column + 1)

    def _between(self, first, last) -> Span:
        (line, col), (end_line, end_col) = _start(first), _end(last)
        return Span(self.file, line, col, end_line, end_col)

    def _chain(self, node: Tree, kids: list) -> tuple:
        """`a + b - c`, `W V x`, `n * m`: binary nodes leaning left, each spanning from the first
        term to its own last one, built in a loop."""
        make, raw = _CHAINS[node.data], node.children
        step = 1 if node.data == "app" else 2  # terms alone, or operator and term
        value, depth = kids[0]
        for i in range(step, len(kids), step):
            term, term_depth = kids[i]
            depth = max(depth, term_depth) + 1
            if depth > MAX_DEPTH:
                raise _too_deep(self._between(raw[i - step + 1], raw[i]), term)
            op = str(raw[i - 1]) if step == 2 else None
            value = make(op, value, term, self._between(raw[0], raw[i]))
        return value, depth

    def paren(self, meta, c):
        return c[0]

    # --- items
    def start(self, meta, items):
        return ast.Program(self.file, tuple(items))

    def signature(self, meta, c):
        name, (sig, impl) = c
        return ast.Signature(str(name), (), sig, impl, self._s(meta))

    def signature_with_config(self, meta, c):
        (name, items), (sig, impl) = c
        items = tuple(replace(i, config=True) for i in items)
        return ast.Signature(name, items, sig, impl, self._s(meta))

    def abstract_decl(self, meta, c):
        return ast.AbstractDecl(str(c[0]), (), c[1][0], self._s(meta))

    def abstract_with_config(self, meta, c):
        (name, items), (sig, _) = c
        items = tuple(replace(i, config=True) for i in items)
        return ast.AbstractDecl(name, items, sig, self._s(meta))

    def implements(self, meta, c):
        return (c[0][0], str(c[1]))

    def named_sig(self, meta, c):
        return (ast.NamedSig(str(c[0]), self._s(meta)), None)

    def fn_type(self, meta, c):
        return (ast.FnType(c[0], c[1], self._s(meta)), None)

    def header(self, meta, c):
        return (str(c[0]), c[1] or ())

    def header_items(self, meta, c):
        """Items after `;` are configuration arguments (modules, activations, sizes)."""
        out, config = [], False
        for item in c:
            if isinstance(item, Token):
                config = True
            else:
                out.append(replace(item, config=config))
        return tuple(out)

    def header_item(self, meta, c):
        name, sig, default = c
        sig = sig[0] if sig is not None else None
        return ast.HeaderItem(str(name), sig, default, False, self._s(meta))

    def definition(self, meta, c):
        (name, items), result, *stmts = c
        body = tuple(s for s in stmts if s is not None)
        if result is not None:
            body = (ast.Result(result, result.span),) + body
        return ast.Definition(name, items, body, self._s(meta))

    def param_decl(self, meta, c):
        return ast.ParamDecl(str(c[0]), c[1], c[2], self._s(meta))

    def let(self, meta, c):
        return ast.Let(str(c[0]), c[1], c[2], self._s(meta))

    def carry(self, meta, c):
        return ast.Let(str(c[0]), c[1], c[2], self._s(meta), carry=True)

    def result(self, meta, c):
        return ast.Result(c[0], self._s(meta))

    def repl_expr(self, meta, c):
        value, t = c
        return value if t is None else _ascribe(value, t)

    def repl_let(self, meta, c):
        name, value, t = c
        value = value if t is None else _ascribe(value, t)
        end = value.span
        return ast.Let(str(name), None, value,
                       Span(self.file, name.line, name.column, end.end_line, end.end_col))

    def train_block(self, meta, c):
        model, data, *settings = c
        return ast.TrainBlock(model, data, tuple(settings), self._s(meta))

    def setting(self, meta, c):
        return ast.Setting(str(c[0]), c[1], self._s(meta))

    def run_block(self, meta, c):
        return ast.RunBlock(tuple(c), self._s(meta))

    def print_stmt(self, meta, c):
        return ast.Print(tuple(c), self._s(meta))

    # --- types
    def real_type(self, meta, c):
        return ast.RealType(self._s(meta))

    def token_type(self, meta, c):
        return ast.TokenType(c[0], self._s(meta))

    def pow_type(self, meta, c):
        return ast.PowType(c[0], c[1], self._s(meta))

    def tuple_type(self, meta, c):
        return ast.TupleType(tuple(c), self._s(meta))

    def dims(self, meta, c):
        return tuple(c)

    def dim_num(self, meta, c):
        return ast.DimNum(int(c[0]), self._s(meta))

    def dim_name(self, meta, c):
        return ast.DimName(str(c[0]), self._s(meta))

    # --- expressions
    def number(self, meta, c):
        return ast.Number(float(c[0]), str(c[0]), self._s(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), self._s(meta))

    def string(self, meta, c):
        return ast.String(str(c[0])[1:-1], self._s(meta))

    def call(self, meta, c):
        func, args = c
        args = args or ()
        pos = tuple(a for a in args if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(str(func), pos, kws, self._s(meta), _tok_span(self.file, func))

    def args(self, meta, c):
        return tuple(c)

    def kwarg(self, meta, c):
        return ast.KwArg(str(c[0]), c[1], self._s(meta))

    def index(self, meta, c):
        return ast.Index(c[0], c[1], self._s(meta))

    def neg(self, meta, c):
        return ast.Neg(c[0], self._s(meta))

    def ascribe(self, meta, c):
        return ast.Ascribe(c[0], c[1], self._s(meta))


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


def _terminal_text(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    for t in _lark().terminals:
        if t.name == name and t.pattern.type == "str":
            return f"'{t.pattern.value}'"
    return name.lower()


def _expected(names) -> str:
    """The terminals the parser could take. Lark's anonymous ones (`->`, `//`) are left out,
    as LALR may list them where they cannot come, unless nothing else is expected."""
    names = set(names)
    shown = {n for n in names if not n.startswith("__")} or {
        n for n in names if not _terminal_text(n).startswith("__")}
    words = sorted({_terminal_text(n) for n in shown},
                   key=lambda w: (not w.startswith("')"), w))
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> DpError:
    lines = text.splitlines() or [""]
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
    expected = _expected(getattr(err, "expected", None) or getattr(err, "allowed", ()))
    msg = f"unexpected {found}" + (f"; expected {expected}" if expected else "")
    return DpError("syntax", msg, span)


def _dedent_error(err: _BadDedent, file: str, text: str) -> DpError:
    """The line's indentation, and the indentations of the blocks around it that would do."""
    line, indent = err.token.end_line, err.indent
    tabs, spaces = indent.count("\t"), indent.count(" ")
    said = plural(spaces, "space")
    if tabs:
        width = spaces + tabs * _DpIndenter.tab_len
        said = plural(tabs, "tab") + (f" and {said}" if spaces else "") + f" ({width} spaces)"
    columns = " or ".join(str(c) for c in err.columns)
    notes = (f"the enclosing blocks are indented by {columns} spaces; indent it like one of them",)
    margins = [ln[:len(ln) - len(ln.lstrip(" \t"))] for ln in text.split("\n")[:line]]
    if any("\t" in m for m in margins):
        notes += (f"a tab counts as {_DpIndenter.tab_len} spaces: indent with spaces only",)
    return DpError("syntax", f"this line is indented by {said}, which matches no enclosing block",
                   Span(file, line, 1, line, 1 + len(indent)), notes)


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
        raise _syntax_error(err, file, text) from None
    except _BadDedent as err:
        raise _dedent_error(err, file, text) from None
    except LarkError as err:  # none is known to reach here: a message, not a traceback
        lines = text.splitlines() or [""]
        end = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        raise DpError("syntax", f"cannot parse this text: {err}", end) from None
    return _ToAst(file).build(tree)
