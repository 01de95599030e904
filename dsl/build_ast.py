"""Stage 1, second half: lark's parse tree -> the immutable AST of dsl/ast.py, spans on every node.

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

from dataclasses import replace

from lark import Token, Tree

from . import ast
from .errors import DpError, Span

MAX_DEPTH = 1000


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
    "compare": lambda op, a, b, s: ast.BinOp(op, a, b, s),  # one link at most: `x > 0`
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


class ToAst:
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

    def kernel_decl(self, meta, c):
        return ast.KernelDecl(str(c[0]), self._s(meta))

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
