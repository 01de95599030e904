"""Start-up: `dp check` loads only the front end, the parser's tables and the parsed standard
library come from the per-user cache (dsl/cache.py), a damaged or stale cache is rebuilt and
never an error, and `dp train` reports its first step (plan, kernels) apart from the rest."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, dp_here, program_in
from dp.dsl import cache, loader, parser
from dp.interpreter.training.progress import Progress

DIGITS = str(ROOT / "programs" / "digits_mlp.dp")


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """An empty cache directory, and nothing of the front end kept in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(loader, "_PARSED", {})
    parser._lark.cache_clear()
    yield tmp_path / "cache" / "dp" / cache.FOLDER
    parser._lark.cache_clear()  # the next test's parser is built from the real cache


def _check_output() -> str:
    code, out, err = dp_here("check", DIGITS)
    assert (code, err) == (0, "")
    return out


def _forget(monkeypatch) -> None:
    """As a new process: nothing parsed or built in memory."""
    monkeypatch.setattr(loader, "_PARSED", {})
    parser._lark.cache_clear()


def test_a_second_run_parses_only_the_users_file(cold, monkeypatch):
    first = _check_output()
    assert sorted(p.name.split("-")[0] for p in cold.iterdir()) == ["grammar", "stdlib"]
    assert all(p.suffix == ".json" for p in cold.iterdir())
    _forget(monkeypatch)
    parsed = []
    monkeypatch.setattr(parser, "_build", lambda: pytest.fail("the grammar was compiled"))
    monkeypatch.setattr(loader, "parse", lambda text, file: parsed.append(file) or
                        parser.parse(text, file))
    assert _check_output() == first
    assert parsed == [DIGITS]  # the standard library came from the cache


@pytest.mark.parametrize("damage", [b"", b"not json", b"\xff\xfe", b"[1]", b'{"d": []}',
                                    b'["another key", {"t": [1, 2]}]',
                                    b'["k", {"c": "Unknown", "f": []}]'])
def test_a_damaged_or_stale_cache_is_rebuilt(cold, monkeypatch, damage):
    first = _check_output()
    keys = {p.name: json.loads(p.read_text())[0] for p in cold.iterdir()}
    for name in keys:
        (cold / name).write_bytes(damage)
    _forget(monkeypatch)
    assert _check_output() == first
    assert {p.name: json.loads(p.read_text())[0] for p in cold.iterdir()} == keys
    _forget(monkeypatch)
    monkeypatch.setattr(parser, "_build", lambda: pytest.fail("the grammar was compiled"))
    assert _check_output() == first


def test_damaged_tables_under_the_right_key_are_built_again(cold, monkeypatch):
    first = _check_output()
    (grammar,) = cold.glob("grammar-*.json")
    grammar.write_text(json.dumps([cache.front_end_key(), {"d": [["data", 1]]}]))
    _forget(monkeypatch)
    assert _check_output() == first


def _spans(x, out: list) -> list:
    """Every span in a tree (equality of AST nodes leaves them out)."""
    if dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            _spans(getattr(x, f.name), out)
        out.append(getattr(x, "span", None))
    elif isinstance(x, (list, tuple)):
        for v in x:
            _spans(v, out)
    return out


def test_the_kept_standard_library_is_the_parsed_one(cold, monkeypatch):
    sources = loader.stdlib_sources()
    parsed = [parser.parse(text, path) for path, text in sources.items()]
    loader.stdlib_programs(sources)  # parsed, and kept
    _forget(monkeypatch)
    monkeypatch.setattr(loader, "parse", lambda text, file: pytest.fail("parsed again"))
    kept = loader.stdlib_programs(sources)
    assert kept == parsed and _spans(kept, []) == _spans(parsed, [])


def test_an_edit_of_the_standard_library_is_parsed_again(cold, monkeypatch):
    sources = loader.stdlib_sources()
    before = loader.stdlib_programs(sources)
    path = next(iter(sources))
    changed = dict(sources, **{path: sources[path] + "\nExtra: R^2 -> R^2\nExtra(x) = x\n"})
    _forget(monkeypatch)
    after = loader.stdlib_programs(changed)
    assert after[0] != before[0] and after[1:] == before[1:]
    assert "Extra" in str(after[0].items[-1])
    _forget(monkeypatch)
    assert loader.stdlib_programs(sources) == before


def test_a_directory_others_may_write_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "dp" / cache.FOLDER
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    assert not cache.usable(str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "shared"))
    assert cache.cache_dir() not in (None, str(shared))  # the next candidate
    private = tmp_path / "private" / "dp"
    assert cache.usable(str(private)) and (private.stat().st_mode & 0o777) == 0o700


def test_without_a_usable_directory_nothing_is_kept(monkeypatch):
    monkeypatch.setattr(cache, "candidates", lambda name: [])
    built = []
    assert cache.cached("thing", "k", lambda: built.append(1) or 7) == 7
    assert cache.cached("thing", "k", lambda: built.append(1) or 7) == 7
    assert built == [1, 1]


def _subprocess_check(tmp_path, code: str, home: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    if home is not None:
        env["HOME"] = home
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


CHECK_THEN_LIST = """
import sys
from dp.interpreter.commands.cli import main
code = main(["check", "programs/digits_mlp.dp"])
print("MODULES", " ".join(sorted(sys.modules)))
sys.exit(code)
"""

RUN_TIME = ("dp.interpreter.core.model", "dp.interpreter.core.execute",
            "dp.interpreter.core.optim", "dp.interpreter.training.train",
            "dp.interpreter.data", "tqdm", "safetensors", "matplotlib", "numba",
            "numpy", "dp.interpreter.core.lower")  # a small model is not lowered to be checked


def test_dp_check_loads_no_run_time_and_compiles_no_grammar_when_warm(tmp_path):
    cold = _subprocess_check(tmp_path, CHECK_THEN_LIST)
    assert cold.returncode == 0, cold.stderr
    no_grammar = "import lark; lark.Lark.__init__ = None\n"  # building a Lark would fail
    warm = _subprocess_check(tmp_path, no_grammar + CHECK_THEN_LIST)
    assert (warm.returncode, warm.stderr) == (0, "")
    out, modules = warm.stdout.split("MODULES ")
    assert out == cold.stdout.split("MODULES ")[0]
    assert "ok (1 module)" in out
    loaded = set(modules.split())
    assert not [m for m in RUN_TIME if m in loaded]


def test_cache_with_home_unusable_and_no_xdg(tmp_path):
    """HOME a file, XDG_CACHE_HOME unset: the cache goes to the temporary directory, or
    nowhere; either way `dp check` works and prints the same."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    env["HOME"] = str(home)
    runs = [subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "check",
                            DIGITS], env=env, text=True, capture_output=True, timeout=120)
            for _ in range(2)]
    assert [(r.returncode, r.stderr) for r in runs] == [(0, ""), (0, "")]
    assert runs[0].stdout == runs[1].stdout


# --- the first step ---------------------------------------------------------------------------
def test_progress_keeps_the_first_step_out_of_the_rate():
    out = io.StringIO()
    progress = Progress(5, out)
    progress.step(lambda: "", 1.0, 32, 2.0)  # the plan built, the kernels loaded
    for _ in range(3):
        progress.step(lambda: "", 1.0, 32, 0.01)
    progress.period_done("epoch 1/2", 0.5)
    progress.step(lambda: "", 1.0, 10, 0.5)
    progress.period_done("epoch 2/2", 0.25)
    assert progress.first == 2.0
    assert out.getvalue() == ("epoch 1/2  loss 0.5000  3,200 examples/s\n"
                              "epoch 2/2  loss 0.2500  20 examples/s\n")


def test_an_epoch_of_one_step_is_rated_by_it():
    out = io.StringIO()
    progress = Progress(2, out)
    progress.step(lambda: "", 1.0, 8, 0.5)
    progress.period_done("epoch 1/2", 1.0)
    assert out.getvalue() == "epoch 1/2  loss 1.0000  16 examples/s\n"


def test_dp_train_reports_its_first_step(tmp_path):
    program = program_in(tmp_path)
    code, out, err = dp_here("train", program, "--steps", "3")
    assert (code, err) == (0, "")
    last = out.splitlines()[-3]  # then the run block's two reports
    m = re.fullmatch(r"trained 3 steps in (\d+\.\d\d) s \(first step (\d+\.\d\d) s\); "
                     r"final loss \d\.\d{4}; saved .*prog\.safetensors", last)
    assert m, out
    assert 0 <= float(m[2]) <= float(m[1])
    # nothing left to run: no first step to report
    code, out, err = dp_here("train", program, "--steps", "3", "--resume")
    assert (code, err) == (0, "")
    assert re.search(r"^trained 3 steps in \d+\.\d\d s; final loss", out, re.M), out


def test_the_summary_holds_the_first_step(tmp_path):
    from dp.dsl.check_blocks import override
    from dp.dsl.loader import load_programs
    from dp.interpreter.core.model import Model
    from dp.interpreter.training.train import train

    tprog, sources = load_programs([str(program_in(tmp_path))])
    config = override(tprog.train, {"steps": 4})
    model = Model(tprog, config.model, config.model_span)
    summary = train(model, config, str(tmp_path), str(tmp_path / "m.safetensors"), "x",
                    out=io.StringIO())
    assert 0 < summary["first_step_seconds"] <= summary["seconds"]
