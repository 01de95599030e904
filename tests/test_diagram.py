"""`dp show`: a module as a box diagram. The graph is tested as data; the SVG keeps its text
as text, so the drawn labels, types and counts are read back from it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT
from dp.dsl.loader import load_text
from dp.interpreter.commands.cli import main
from dp.interpreter.commands.diagram import build
from dp.interpreter.core.lower import lower

DIGITS = str(ROOT / "programs" / "digits_mlp.dp")


def show(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["show", *args])
    out, err = capsys.readouterr()
    return code, out, err


def svg_texts(path) -> list[str]:
    return [e.text for e in ET.parse(path).iter("{http://www.w3.org/2000/svg}text")]


def test_digits_svg_has_its_boxes_types_and_counts(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = show(capsys, "Digits", DIGITS)
    assert (code, err) == (0, "")
    assert out == "wrote Digits.svg: 2 boxes, 9,610 parameters\n"
    texts = svg_texts(tmp_path / "Digits.svg")
    for label in ["Digits: R^64 -> R^10", "x: R^64", "feedforward1", "FeedForward: R^64 -> R^128",
                  "8,320 parameters", "feedforward2", "FeedForward: R^128 -> R^10",
                  "act = identity", "1,290 parameters", "R^128", "output: R^10",
                  "9,610 parameters in total"]:
        assert label in texts, label


def test_attention_draws_its_builtins_and_the_types_between_them(capsys, tmp_path):
    out = tmp_path / "attention.svg"
    code, stdout, _ = show(capsys, "Attention", "-o", str(out))
    assert code == 0 and stdout.startswith(f"wrote {out}: 4 boxes")
    texts = svg_texts(out)
    for label in ["Attention: ((R^d)^m, (R^d)^n) -> (R^d)^m", "heads = 4, mask = identity",
                  "qs: (R^d)^m", "xs: (R^d)^n", "linear1", "map Linear: R^d -> R^d", "linear4",
                  "split_heads(h = heads)", "transpose", "@", "/ sqrt(d / heads)", "mask",
                  "default: identity", "softmax", "join_heads",
                  "q: R^(heads, m, d / heads)", "w: R^(heads, m, n)", "R^(heads, m, n)",
                  "output: (R^d)^m", "parameter counts need concrete sizes for d, m, n"]:
        assert label in texts, label


def test_residual_and_module_arguments(capsys, tmp_path):
    out = tmp_path / "prenorm.svg"
    assert show(capsys, "PreNorm", "-o", str(out))[0] == 0
    texts = svg_texts(out)
    for label in ["+", "f", "SequenceModel: (R^d)^n -> (R^d)^n", "a module argument",
                  "layernorm", "map LayerNorm: R^d -> R^d", "(R^d)^n"]:
        assert label in texts, label
    out = tmp_path / "block.svg"
    assert show(capsys, "TransformerBlock", "-o", str(out))[0] == 0
    texts = svg_texts(out)
    for label in ["addnorm1", "AddNorm: (R^d)^n -> (R^d)^n",
                  "f = SelfAttention(; heads = heads, mask = mask)", "addnorm2",
                  "f = PositionWise(; ff = ff)", "a: (R^d)^n",
                  "implements SequenceModel; heads = 4, ff = 256, mask = identity"]:
        assert label in texts, label


def test_a_generic_stdlib_module_is_drawn_symbolically(capsys, tmp_path):
    out = tmp_path / "ff.svg"
    code, stdout, _ = show(capsys, "FeedForward", "-o", str(out))
    assert code == 0
    assert stdout == f"wrote {out}: 0 boxes, parameter counts need sizes\n"
    texts = svg_texts(out)
    for label in ["FeedForward: R^n -> R^m", "param W: R^(m, n) ~ glorot",
                  "param b: R^m ~ zeros", "x: R^n", "@", "+", "act", "default: relu", "R^m",
                  "output: R^m", "parameter counts need concrete sizes for n, m"]:
        assert label in texts, label


def test_png_output(capsys, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "digits.png"
    assert show(capsys, "Digits", DIGITS, "-o", str(out))[0] == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(out).shape
    assert 300 < width < 2000 and 500 < height < 3000


SMALL = """
Res: R^8 -> R^8
Res(x) =
  h = FeedForward(x; m = 16)
  x + FeedForward(h; act = identity) * 2
"""


def test_graph_of_a_small_program():
    tprog = load_text(SMALL)
    d = build(tprog, tprog.defs["Res"])
    assert [(n.kind, n.lines) for n in d.nodes] == [
        ("input", ("x: R^8",)),
        ("call", ("feedforward1", "FeedForward: R^8 -> R^16", "144 parameters")),
        ("value", ("h: R^16",)),
        ("call", ("feedforward2", "FeedForward: R^16 -> R^8", "act = identity",
                  "136 parameters")),
        ("value", ("R^8",)),
        ("op", ("* 2",)),
        ("value", ("R^8",)),
        ("op", ("+",)),
        ("output", ("output: R^8",)),
    ]
    assert d.edges == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (0, 7), (6, 7), (7, 8)]
    assert (d.boxes, d.total, d.footer) == (2, 280, "280 parameters in total")


def test_repeat_scan_and_carries():
    tprog = load_text("""
Stack: (R^8)^4 -> R^8
Stack(xs) = Collapse(scan(LSTM, repeat(2, TransformerBlock(; heads = 2, ff = 16), xs));
                     over = seq_last)
""")
    d = build(tprog, tprog.defs["Stack"])
    boxes = [n.lines for n in d.nodes if n.kind == "call"]
    specs = lower(tprog, "Stack", 1).specs
    blocks = sum(math.prod(s.shape) for p, s in specs.items() if ".transformerblock" in p)
    assert boxes == [
        ("transformerblock", "repeat 2 × TransformerBlock: (R^8)^4 -> (R^8)^4",
         "heads = 2, ff = 16", f"{blocks:,} parameters"),
        ("lstm", "scan LSTM: (R^8, R^8) -> R^8", "544 parameters"),
        ("collapse", "Collapse: (R^8)^4 -> R^8", "over = seq_last", "no parameters"),
    ]
    assert d.total == sum(math.prod(s.shape) for s in specs.values())
    tprog = load_text("")
    lines = {line for n in build(tprog, tprog.defs["LSTM"]).nodes for line in n.lines}
    assert {"c: R^h from the previous step", "c: R^h", "c to the next step", "tanh",
            "o: R^h"} <= lines


def test_unknown_module_is_a_name_error_with_a_suggestion(capsys, tmp_path):
    code, out, err = show(capsys, "Digit", DIGITS, "-o", str(tmp_path / "x.svg"))
    assert code == 1 and out == ""
    assert err.startswith(f"error[name]: unknown module 'Digit' in {DIGITS} or the standard "
                          "library\n")
    assert "= note: did you mean 'Digits'?" in err and "Traceback" not in err
    code, _, err = show(capsys, "TransformerBlok", "-o", str(tmp_path / "x.svg"))
    assert code == 1 and "did you mean 'TransformerBlock'?" in err
    code, _, err = show(capsys, "SequenceModel", "-o", str(tmp_path / "x.svg"))
    assert code == 1 and err.startswith("error[type]: SequenceModel is abstract")
    assert not list(tmp_path.iterdir())


def test_bad_extension_and_missing_file(capsys, tmp_path):
    code, _, err = show(capsys, "Digits", DIGITS, "-o", str(tmp_path / "x.pdf"))
    assert code == 2 and err.startswith("error[usage]: dp show writes .svg or .png files")
    code, _, err = show(capsys, "Digits", str(tmp_path / "none.dp"))
    assert code == 1 and err.startswith(f"error[file]: no such file: {tmp_path / 'none.dp'}")
    code, _, err = show(capsys, "Digits", DIGITS, "-o", str(tmp_path / "no" / "x.svg"))
    assert code == 1 and err.startswith("error[file]: cannot write")


@pytest.mark.parametrize("name", ["SequenceToSequence", "AlexNet", "LanguageModel"])
def test_every_kind_of_module_draws(capsys, tmp_path, name):
    assert show(capsys, name, "-o", str(tmp_path / f"{name}.svg"))[0] == 0
