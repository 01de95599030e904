"""`dp show` of a module that does not check: the diagram is drawn up to the step where the types
disagree, that arrow marked (red, dashed) with the type given and the one expected; the error is
said as `dp check` says it, with exit code 1."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT, dp_here
from dp.dsl.errors import DpError
from dp.dsl.loader import load_text
from dp.interpreter.commands.diagram import build_failed

SVG = "{http://www.w3.org/2000/svg}"
FLATTEN = "tests/programs/errors/flatten_size.dp"  # Conv, MaxPool, flatten, then Head: 256 != 512


def texts(path) -> list[str]:
    return [e.text for e in ET.parse(path).iter(f"{SVG}text")]


def test_the_svg_has_the_good_steps_and_the_marked_arrow_with_both_types(tmp_path):
    out = tmp_path / "net.svg"
    code, stdout, stderr = dp_here("show", "Net", FLATTEN, "-o", str(out), cwd=ROOT)
    assert code == 1
    assert stdout == f"wrote {out}: Net up to where its types disagree (the red arrow)\n"
    assert stderr == dp_here("check", FLATTEN, cwd=ROOT)[2]  # the error, as dp check says it
    shown = texts(out)
    for label in ["Net: R^(1, 8, 8) -> R^10", "x: R^(1, 8, 8)", "conv", "Conv: R^(1, 8, 8) -> "
                  "R^(16, 8, 8)", "maxpool", "MaxPool: R^(16, 8, 8) -> R^(16, 4, 4)", "flatten",
                  "R^(16, 4, 4)", "Head", "Head: R^512 -> R^10", "R^256 → expects R^512",
                  "Net does not check: the types disagree at the red arrow"]:
        assert label in shown, label
    assert not any(t.startswith("output") for t in shown)  # nothing after the failure


def test_the_marked_arrows_are_red_and_dashed_and_the_others_are_not(tmp_path):
    out = tmp_path / "net.svg"
    assert dp_here("show", "Net", FLATTEN, "-o", str(out), cwd=ROOT)[0] == 1
    groups = [g for g in ET.parse(out).iter(f"{SVG}g") if g.get("id", "").startswith("mismatch")]
    assert len(groups) == 2  # into the mismatch and out of it
    for g in groups:
        style = " ".join(p.get("style", "") for p in g.iter(f"{SVG}path"))
        assert "#b00020" in style and "stroke-dasharray" in style
    inside = sum(ET.tostring(g, encoding="unicode").count("stroke-dasharray") for g in groups)
    every = ET.tostring(ET.parse(out).getroot(), encoding="unicode").count("stroke-dasharray")
    assert every == inside  # no other arrow is dashed


def test_the_graph_of_a_failed_product_as_data():
    with pytest.raises(DpError) as err:
        load_text("Digits: R^64 -> R^10\nDigits(x) =\n  h = relu(x)\n  W h + b\n"
                  "  param W: R^(10, 32) ~ glorot\n  param b: R^10 ~ zeros\n", "prog.dp")
    (e,) = err.value.errors
    d = build_failed(e.partial)
    lines = [n.lines for n in d.nodes]
    assert ("x: R^64",) in lines and ("relu",) in lines and ("h: R^64",) in lines
    assert ("@",) in lines and ("R^64 → expects R^32",) in lines
    marked = sorted(d.marked)
    mismatch = lines.index(("R^64 → expects R^32",))
    assert [b for _, b in marked].count(mismatch) == 1
    assert (mismatch, lines.index(("@",))) in d.marked
    assert ("+",) not in lines  # the sum after the product is not drawn


@pytest.mark.parametrize("program, step, label", [
    ("Small: R^32 -> R^10\nSmall(x) = FeedForward(x)\n\nNet: R^64 -> R^10\n"
     "Net(x) = Small(relu(x))\n", ("Small", "Small: R^32 -> R^10"), "R^64 → expects R^32"),
    ("Net: R^64 -> R^10\nNet(x) = (FeedForward(x) : R^128)\n",
     ("output: R^10",), "R^128 → expects R^10"),
    ("Net: (R^4)^3 -> (R^4)^3\nNet(xs) = xs + map(Linear(; m = 5), xs)\n",
     ("+",), "(R^5)^3 → expects (R^4)^3"),
    ("Net: R^8 -> R^8\nNet(x) =\n  h: R^4 = relu(x)\n  h\n", ("h: R^4",), "R^8 → expects R^4"),
])
def test_each_kind_of_step_is_drawn_with_its_mismatch(program, step, label):
    with pytest.raises(DpError) as err:
        load_text(program, "prog.dp")
    (e,) = err.value.errors
    d = build_failed(e.partial)
    lines = [n.lines for n in d.nodes]
    assert step in lines and (label,) in lines
    assert (lines.index((label,)), lines.index(step)) in d.marked


def test_a_module_that_fails_otherwise_draws_nothing(tmp_path):
    program = tmp_path / "bad.dp"
    program.write_text("Net: R^4 -> R^4\nNet(x) = relu(y)\n")
    out = tmp_path / "net.svg"
    code, stdout, stderr = dp_here("show", "Net", str(program), "-o", str(out))
    assert (code, stdout) == (1, "")
    assert stderr.startswith("error[name]: unknown name 'y'")
    assert not out.exists()


def test_another_module_that_fails_is_not_drawn_in_its_place(tmp_path):
    program = tmp_path / "two.dp"
    program.write_text("Good: R^4 -> R^4\nGood(x) = relu(x)\n\n"
                       "Bad: R^4 -> R^2\nBad(x) = relu(x)\n")
    out = tmp_path / "good.svg"
    code, stdout, stderr = dp_here("show", "Good", str(program), "-o", str(out))
    assert (code, stdout) == (1, "")
    assert stderr.startswith("error[shape]: Bad should give R^2 (its signature), but")
    assert not out.exists()
