"""`dp check FILE --summary`: the layers of each module, their outputs and parameter counts."""

from __future__ import annotations

import math

from conftest import ROOT
from dp.dsl.loader import load, load_text
from dp.interpreter.commands.cli import main
from dp.interpreter.core.lower import lower
from dp.interpreter.commands.summary import summary_lines


def test_digits_table(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["check", "programs/digits_mlp.dp", "--summary"]) == 0
    assert capsys.readouterr().out == """\
programs/digits_mlp.dp: ok (1 module)

Digits: R^64 -> R^10
  layer          module        output   parameters
  feedforward1   FeedForward   R^128         8,320
  feedforward2   FeedForward   R^10          1,290
  total                                      9,610
"""


def test_transformer_counts_match_lowering():
    tprog = load([str(ROOT / "programs" / "charlm_transformer.dp")])
    lines = summary_lines(tprog, tprog.defs["CharTransformer"])
    specs = {p: math.prod(s.shape) for p, s in
             lower(tprog, "CharTransformer", 1).specs.items()}
    assert sum(specs.values()) == 117_479
    assert lines[0] == "CharTransformer: Token[103]^64 -> Token[103]^64"
    assert lines[-1].split() == ["total", "117,479"]
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert rows["languagemodel"] == ["languagemodel", "LanguageModel", "Token[103]^64",
                                     "117,479"]
    assert rows["embedtoken"] == ["embedtoken", "map", "EmbedToken", "(R^64)^64", "6,592"]
    assert rows["generatetoken"][-2:] == ["Token[103]^64", "6,695"]
    block = sum(n for p, n in specs.items()
                if p.startswith("CharTransformer.languagemodel.body.prenormblock2."))
    assert rows["prenormblock2"] == ["prenormblock2", "PreNormBlock", "(R^64)^64", f"{block:,}"]
    assert "            feedforward   map FeedForward     (R^256)^64          16,640" in lines


def test_nested_rows_sum_to_their_parent():
    tprog = load_text("""
Stack: (R^8)^4 -> R^8
Stack(xs) = Collapse(scan(SimpleRNN, repeat(2, TransformerBlock(; heads = 2, ff = 16), xs)))
""")
    lines = summary_lines(tprog, tprog.defs["Stack"])
    rows = [(len(line) - len(line.lstrip()), line.split()) for line in lines[2:-1]]
    total = int(lines[-1].split()[-1].replace(",", ""))
    assert total == sum(math.prod(s.shape) for s in lower(tprog, "Stack", 1).specs.values())
    assert sum(int(r[-1].replace(",", "")) for depth, r in rows if depth == 2) == total
    assert [r[:2] for depth, r in rows if depth == 2] == [
        ["transformerblock1", "TransformerBlock"], ["transformerblock2", "TransformerBlock"],
        ["simplernn", "scan"], ["collapse", "Collapse"]]


def test_a_generic_module_keeps_its_dimension_names():
    tprog = load_text("")
    assert summary_lines(tprog, tprog.defs["PositionWise"]) == [
        "PositionWise: (R^d)^n -> (R^d)^n  (implements SequenceModel)",
        "  layer         module            output",
        "  feedforward   map FeedForward   (R^ff)^n",
        "  linear        map Linear        (R^d)^n",
        "  parameters: 2 * d * ff + d + ff",
        "  parameter counts need concrete sizes for d, n",
    ]
    assert summary_lines(tprog, tprog.defs["FeedForward"]) == [
        "FeedForward: R^n -> R^m",
        "  layer   module   output",
        "  W       param    R^(m, n)",
        "  b       param    R^m",
        "  parameters: m * n + m",
        "  parameter counts need concrete sizes for n, m",
    ]
    lines = summary_lines(tprog, tprog.defs["Transformer"])
    assert "  prenormblock        repeat layers × PreNormBlock   (R^d)^n" in lines
    assert summary_lines(tprog, tprog.defs["MaxPool"])[1] == "  no layers and no parameters"


def test_dump_plan_prints_the_plans_of_concrete_modules_and_says_why_generic_ones_have_none():
    from conftest import dp_here

    code, out, err = dp_here("check", "programs/digits_mlp.dp", "--dump", "plan", cwd=ROOT)
    assert (code, err) == (0, "")
    assert "v9: [1, 10] = linear(v5, v6, v7)" in out and out.rstrip().endswith("outputs: v9")
    code, out, err = dp_here("check", "stdlib/feedforward.dp", "--dump", "plan", cwd=ROOT)
    assert (code, err) == (0, "")
    assert ("no plan: FeedForward waits for n, m; it is lowered where a module uses it"
            in out.splitlines())
