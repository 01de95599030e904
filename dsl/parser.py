"""Stage 1: source text -> ast.Program (lark LALR with an indenter; spans on every node).

Syntax errors become DpError('syntax') that say what was found and what was expected, at the
line and column of the offending token (the last line for an unexpected end of file).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, VisitError
from lark.indenter import Indenter

from . import ast
from .errors import DpError, Span

MAX_NESTING = 200


class _DpIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", postlex=_DpIndenter(), propagate_positions=True,
                maybe_placeholders=True, start=["start", "repl_input"])


def _span(file: str, meta) -> Span:
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _ascribe(value: ast.Expr, t: ast.TypeAst) -> ast.Ascribe:
    """`e : T` without parentheses (a REPL input), spanning from e to T."""
    a, b = value.span, t.span
    return ast.Ascribe(value, t, Span(a.file, a.line, a.col, b.end_line, b.end_col))


class _ToAst(Transformer):
    """One method per grammar rule or alias; `meta` gives the span."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta) -> Span:
        return _span(self.file, meta)

    # --- items
    @v_args(meta=True)
    def start(self, meta, items):
        return ast.Program(self.file, tuple(items))

    @v_args(meta=True)
    def signature(self, meta, c):
        name, (sig, impl) = c
        return ast.Signature(str(name), (), sig, impl, self._s(meta))

    @v_args(meta=True)
    def signature_with_config(self, meta, c):
        (name, items), (sig, impl) = c
        items = tuple(replace(i, config=True) for i in items)
        return ast.Signature(name, items, sig, impl, self._s(meta))

    @v_args(meta=True)
    def abstract_decl(self, meta, c):
        return ast.AbstractDecl(str(c[0]), (), c[1][0], self._s(meta))

    @v_args(meta=True)
    def abstract_with_config(self, meta, c):
        (name, items), (sig, _) = c
        items = tuple(replace(i, config=True) for i in items)
        return ast.AbstractDecl(name, items, sig, self._s(meta))

    def implements(self, c):
        return (c[0][0], str(c[1]))

    @v_args(meta=True)
    def named_sig(self, meta, c):
        return (ast.NamedSig(str(c[0]), self._s(meta)), None)

    @v_args(meta=True)
    def fn_type(self, meta, c):
        return (ast.FnType(c[0], c[1], self._s(meta)), None)

    def header(self, c):
        return (str(c[0]), c[1] or ())

    def header_items(self, c):
        """Items after `;` are configuration arguments (modules, activations, sizes)."""
        out, config = [], False
        for item in c:
            if isinstance(item, Token):
                config = True
            else:
                out.append(replace(item, config=config))
        return tuple(out)

    @v_args(meta=True)
    def header_item(self, meta, c):
        name, sig, default = c
        sig = sig[0] if sig is not None else None
        return ast.HeaderItem(str(name), sig, default, False, self._s(meta))

    @v_args(meta=True)
    def definition(self, meta, c):
        (name, items), result, *stmts = c
        body = tuple(s for s in stmts if s is not None)
        if result is not None:
            body = (ast.Result(result, result.span),) + body
        return ast.Definition(name, items, body, self._s(meta))

    @v_args(meta=True)
    def param_decl(self, meta, c):
        return ast.ParamDecl(str(c[0]), c[1], c[2], self._s(meta))

    @v_args(meta=True)
    def let(self, meta, c):
        return ast.Let(str(c[0]), c[1], c[2], self._s(meta))

    @v_args(meta=True)
    def carry(self, meta, c):
        return ast.Let(str(c[0]), c[1], c[2], self._s(meta), carry=True)

    @v_args(meta=True)
    def result(self, meta, c):
        return ast.Result(c[0], self._s(meta))

    @v_args(meta=True)
    def repl_expr(self, meta, c):
        value, t = c
        return value if t is None else _ascribe(value, t)

    @v_args(meta=True)
    def repl_let(self, meta, c):
        name, value, t = c
        value = value if t is None else _ascribe(value, t)
        end = value.span
        return ast.Let(str(name), None, value,
                       Span(self.file, name.line, name.column, end.end_line, end.end_col))

    @v_args(meta=True)
    def train_block(self, meta, c):
        model, data, *settings = c
        return ast.TrainBlock(model, data, tuple(settings), self._s(meta))

    @v_args(meta=True)
    def setting(self, meta, c):
        return ast.Setting(str(c[0]), c[1], self._s(meta))

    @v_args(meta=True)
    def run_block(self, meta, c):
        return ast.RunBlock(tuple(c), self._s(meta))

    @v_args(meta=True)
    def print_stmt(self, meta, c):
        return ast.Print(tuple(c), self._s(meta))

    # --- types
    @v_args(meta=True)
    def real_type(self, meta, c):
        return ast.RealType(self._s(meta))

    @v_args(meta=True)
    def token_type(self, meta, c):
        return ast.TokenType(c[0], self._s(meta))

    @v_args(meta=True)
    def pow_type(self, meta, c):
        return ast.PowType(c[0], c[1], self._s(meta))

    @v_args(meta=True)
    def tuple_type(self, meta, c):
        return ast.TupleType(tuple(c), self._s(meta))

    def dims(self, c):
        return tuple(c)

    @v_args(meta=True)
    def dim_num(self, meta, c):
        return ast.DimNum(int(c[0]), self._s(meta))

    @v_args(meta=True)
    def dim_name(self, meta, c):
        return ast.DimName(str(c[0]), self._s(meta))

    def _dim_op(op):
        @v_args(meta=True)
        def build(self, meta, c):
            return ast.DimOp(op, c[0], c[1], self._s(meta))
        return build

    dim_add, dim_sub, dim_mul = _dim_op("+"), _dim_op("-"), _dim_op("*")
    dim_div, dim_floordiv = _dim_op("/"), _dim_op("//")

    # --- expressions
    @v_args(meta=True)
    def number(self, meta, c):
        return ast.Number(float(c[0]), str(c[0]), self._s(meta))

    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(str(c[0]), self._s(meta))

    @v_args(meta=True)
    def string(self, meta, c):
        return ast.String(str(c[0])[1:-1], self._s(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        func, args = c
        args = args or ()
        pos = tuple(a for a in args if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(str(func), pos, kws, self._s(meta), _tok_span(self.file, func))

    def args(self, c):
        return tuple(c)

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return ast.KwArg(str(c[0]), c[1], self._s(meta))

    @v_args(meta=True)
    def apply(self, meta, c):
        return ast.Apply(c[0], c[1], self._s(meta))

    @v_args(meta=True)
    def index(self, meta, c):
        return ast.Index(c[0], c[1], self._s(meta))

    @v_args(meta=True)
    def neg(self, meta, c):
        return ast.Neg(c[0], self._s(meta))

    @v_args(meta=True)
    def ascribe(self, meta, c):
        return ast.Ascribe(c[0], c[1], self._s(meta))

    def _binop(op):
        @v_args(meta=True)
        def build(self, meta, c):
            return ast.BinOp(op, c[0], c[1], self._s(meta))
        return build

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")
    matmul = _binop("@")


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
    words = sorted({_terminal_text(n) for n in names if not n.startswith("__")},
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


def _nesting_depth(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch in "([":
            depth += 1
            best = max(best, depth)
        elif ch in ")]":
            depth -= 1
    return best


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
    if _nesting_depth(text) > MAX_NESTING:
        raise DpError("limit", f"nesting deeper than {MAX_NESTING} parentheses",
                      Span(file, 1, 1, 1, 2))
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, file, text) from None
    try:
        return _ToAst(file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, DpError):
            raise err.orig_exc from None
        raise
