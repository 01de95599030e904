"""`dp plot`: the metrics of a run, read back and drawn to a PNG."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, dp_here
from dp.interpreter.training.metrics import read_records
from dp.interpreter.commands.plot import curves


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot")
    program = folder / "digits.dp"
    shutil.copy(ROOT / "programs" / "digits_mlp.dp", program)
    program.write_text(program.read_text().replace(
        "epochs 20", "epochs 4"))
    code, _, err = dp_here("train", program)
    assert code == 0, err
    code, _, err = dp_here("train", program, "--set", "lr=0.01", "--checkpoint",
                           folder / "slow.safetensors")
    assert code == 0, err
    return folder


def test_curves_follow_the_metrics(trained):
    c = curves(read_records(str(trained / "digits.metrics.jsonl")), "digits")
    assert c.steps == list(range(1, 189)) and c.epoch_steps == [47, 94, 141, 188]
    assert c.epoch_losses[0] == pytest.approx(np.mean(c.losses[:47]))
    assert c.eval_steps == c.epoch_steps and len(c.accuracies) == 4
    assert c.accuracies[-1] > 0.9 and c.eval_losses[-1] < c.eval_losses[0]


def test_plot_of_a_program_writes_a_png(trained):
    code, out, err = dp_here("plot", trained / "digits.dp")
    assert (code, err) == (0, "")
    png = trained / "digits.loss.png"
    assert out == f"wrote {png}: 1 run, 188 steps\n"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 1000 and im.size[1] > 400
        colors = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colors, axis=0)) > 20  # curves were drawn, not an empty frame


def test_plot_compares_runs(trained):
    out_png = trained / "both.png"
    code, out, err = dp_here("plot", trained / "digits.metrics.jsonl",
                             trained / "slow.safetensors", "-o", out_png)
    assert (code, err) == (0, "")
    assert out == f"wrote {out_png}: 2 runs, 376 steps\n"
    assert Image.open(out_png).format == "PNG"


def test_a_killed_runs_cut_last_line_is_skipped(tmp_path, trained):
    metrics = tmp_path / "cut.metrics.jsonl"
    text = (trained / "digits.metrics.jsonl").read_text()
    metrics.write_text(text + '{"kind": "step", "step": 189, "lo')
    assert read_records(str(metrics))[-1]["step"] == 188


@pytest.mark.parametrize("content, kind, message", [
    (None, "usage", "no metrics file"),
    ('{"kind": "run"}\nnot json\n{"kind": "step"}\n', "data", "is damaged at line 2"),
    ('{"kind": "run"}\n', "data", "has no training steps yet"),
])
def test_plot_errors(tmp_path, content, kind, message):
    metrics = tmp_path / "x.metrics.jsonl"
    if content is not None:
        metrics.write_text(content)
    code, out, err = dp_here("plot", metrics)
    assert code == (2 if kind == "usage" else 1) and out == ""
    assert err.startswith(f"error[{kind}]: ") and message in err and "Traceback" not in err


def test_plot_writes_only_png(trained):
    code, _, err = dp_here("plot", trained / "digits.dp", "-o", trained / "x.svg")
    assert code == 2 and err.startswith("error[usage]: dp plot writes a PNG")


def test_metrics_records_are_json_lines(trained):
    lines = (trained / "digits.metrics.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[0] == "run" and kinds.count("step") == 188 and kinds.count("epoch") == 4


def test_plot_of_a_program_without_training(tmp_path):
    program = tmp_path / "p.dp"
    program.write_text("Id: R^2 -> R^2\nId(x) = x\n")
    code, out, err = dp_here("plot", program)
    assert (code, out, err) == (2, "", f"error[usage]: {program} has no train block, so it has "
                                       f"no runs to plot\n")
