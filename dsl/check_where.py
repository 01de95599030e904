"""Stage 2, `where(l > r, a, b)`: a where the comparison holds, b elsewhere (its record is in
builtins.py).

The condition is a comparison written in the call (`>`, `<`, `>=`, `<=`): a mask, which is no
value, so only where takes it (check_body.py refuses a comparison anywhere else). Its two
sides and both branches are numbers or real values of one shape. Lowering computes each
branch on safe inputs, so that the branch not chosen never makes a gradient NaN
(interpreter/core/lower.py: `_where`).
"""

from __future__ import annotations

from . import ast
from . import typed as T
from .check_volumes import describe
from .dims import Mismatch
from .signatures import _err, expr_text
from .types import Tensor, apply_subst, scalar, unify_tensors

COMPARISONS = (">", "<", ">=", "<=")


def where_rule(c, name: str, args, sizes, e) -> T.TPrim:
    cond = args[0]
    if not (isinstance(cond, ast.BinOp) and cond.op in COMPARISONS):
        raise _err("type", f"where's condition is a comparison, like x > 0, but it is "
                   f"{expr_text(cond)}", cond.span,
                   "where(c, a, b) gives a where c holds and b elsewhere, e.g. "
                   "where(x > 0, x, 0.1 * x)")
    parts = (cond.left, cond.right, args[1], args[2])
    values = [c.expr(a) for a in parts]
    shape: tuple[T.TExpr, ast.Expr] | None = None  # the first value that is not a number
    for x, a in zip(values, parts, strict=True):
        t = apply_subst(x.type, c.subst)
        if t.vocab is not None:
            raise _err("type", f"where compares and chooses real values, but {describe(a)} is "
                       f"{t}", a.span)
        if t.rank == 0:
            continue
        if shape is None:
            shape = (x, a)
            continue
        try:
            c.subst = unify_tensors(shape[0].type, x.type, c.subst, c.deferred)
        except Mismatch:
            first = apply_subst(shape[0].type, c.subst)
            raise _err("shape", f"where's values must be numbers or of one shape, but "
                       f"{describe(shape[1])} is {first} and {describe(a)} is {t}", a.span,
                       ) from None
    result: Tensor = shape[0].type if shape is not None else scalar()
    return T.TPrim(name, tuple(values), result, e.span, (("op", cond.op),))
