"""A Pygments lexer for dp, for `pygmentize -l dp`, the REPL's input and error messages.

It follows dsl/grammar.lark: keywords are recognised where the grammar puts them (`train` at
the start of a line, not as the value in `split = train`), and the names it colours come from
the tables the checker uses (BUILTINS, the train and run blocks' vocabulary, initializers,
kernels), so they cannot drift. It is registered as the Pygments plugin `dp`
(pyproject.toml); the checker never imports it, so only its users need Pygments.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, include
from pygments.regexopt import regex_opt
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
)

from .blocks import LOSSES, OPTIMIZERS, REPORTS, SETTINGS, SOURCES, TEXTS
from .builtins import BUILTINS
from .kernels import SCAN_KERNELS
from .signatures import INITIALIZERS

KEYWORDS = ("abstract", "implements", "param", "carry", "kernel", "train", "on", "run", "print")
TYPES = ("R", "Token")  # the grammar's other words: the base types
SPECIAL = ("previous",)  # a name the checker gives a meaning (the decoder's tokens so far)

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_LINE_END = r"(?=[ \t\r]*(?:#[^\n]*)?$)"  # only blanks and a comment to the end of the line
_PARAMS = re.compile(rf"^[ \t]+param[ \t]+({_ID})", re.MULTILINE)


def _names(names) -> str:
    """One regular expression matching any of `names` as a whole word."""
    return regex_opt(tuple(names), prefix=r"\b", suffix=r"\b")


class DpLexer(RegexLexer):
    """dp source: a whole file, or one line typed at the REPL."""

    name = "dp"
    aliases = ["dp"]
    filenames = ["*.dp"]
    mimetypes = ["text/x-dp"]

    tokens = {
        "root": [
            (r"^(abstract)\b", Keyword.Declaration),
            (r"^(train)\b(?=[ \t])", Keyword, "train-head"),
            (rf"^(run)([ \t]*)(:){_LINE_END}", bygroups(Keyword, Text, Punctuation),
             "run-body"),
            include("body"),
        ],
        "body": [  # the lines of a definition, and everything an expression can hold
            (rf"^([ \t]+)(param|carry)([ \t]+)({_ID})",
             bygroups(Text, Keyword.Declaration, Text, Name.Variable)),
            (r"^([ \t]+)(kernel)([ \t]+)" + _names(SCAN_KERNELS),
             bygroups(Text, Keyword.Declaration, Text, Name.Builtin.Pseudo)),
            (r"(~)([ \t]*)" + _names(INITIALIZERS),
             bygroups(Operator, Text, Name.Builtin.Pseudo)),
            include("expr"),
        ],
        "expr": [
            (r"#[^\n]*", Comment.Single),
            (r"\\[ \t\f]*\r?\n", Text),  # a line continued
            (r"\n|[ \t\f\r]+", Text),  # a line's indentation stays for the rules at ^
            (r'"[^"\n]*"?', String.Double),  # unclosed: a string still being typed
            (r"([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+",
             Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"\bimplements\b", Keyword),
            (r"\bR\b|\bToken\b(?=[ \t]*\[)", Keyword.Type),
            (_names(BUILTINS), Name.Builtin),
            (_names(SPECIAL), Name.Builtin.Pseudo),
            (r"[A-Z][A-Za-z0-9_]+", Name.Class),  # modules (single capitals are matrices, sizes)
            (_ID, Name),
            (r"->|//|[<>]=?|[-+*/@^~=]", Operator),
            (r"[()\[\],;:]", Punctuation),
            (r".", Error),
        ],
        "train-head": [  # train MODEL on DATA:
            (r"\bon\b", Keyword),
            (rf":{_LINE_END}", Punctuation, ("#pop", "train-body")),
            (r"\n", Text, "#pop"),
            include("block-expr"),
        ],
        "train-body": [  # SETTING VALUE; SETTING VALUE, on indented lines
            (r"\n(?=[^ \t\r\n#])", Text, "#pop"),
            (r"(^[ \t]+|(?<=;)[ \t]*)" + _names(SETTINGS),
             bygroups(Text, Name.Attribute)),
            (_names(LOSSES + tuple(OPTIMIZERS)), Name.Builtin.Pseudo),
            include("block-expr"),
        ],
        "run-body": [  # print REPORT(MODEL, DATA, ...), on indented lines
            (r"\n(?=[^ \t\r\n#])", Text, "#pop"),
            (r"^([ \t]+)(print)\b", bygroups(Text, Keyword)),
            (_names(REPORTS), Name.Builtin.Pseudo),
            include("block-expr"),
        ],
        "block-expr": [
            (_names(tuple(SOURCES) + TEXTS), Name.Builtin.Pseudo),
            include("expr"),
        ],
    }

    def get_tokens_unprocessed(self, text, stack=("root",)):
        """A capitalised name declared by `param` (`param Wq: ...`) is a parameter where it
        is used, not a module; single capitals (`W x`, `Token[V]`) never are modules."""
        params = set(_PARAMS.findall(text))
        for index, token, value in super().get_tokens_unprocessed(text, stack):
            if token is Name.Class and value in params:
                token = Name.Variable
            yield index, token, value
