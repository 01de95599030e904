"""Golden error messages (DESIGN section 6, RELIABILITY 15): `dp check` on each program of
tests/programs/errors/ prints exactly the .err file beside it and exits with code 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, run_dp

ERRORS = sorted((ROOT / "tests" / "programs" / "errors").glob("*.dp"))


@pytest.mark.parametrize("program", ERRORS, ids=lambda p: p.stem)
def test_golden_error(program: Path):
    code, out, err = run_dp("check", str(program.relative_to(ROOT)), cwd=ROOT)
    expected = program.with_suffix(".err").read_text()
    assert err == expected
    assert code == 1 and out == ""
    assert "Traceback" not in err


def test_every_error_kind_has_a_golden_file():
    kinds = {p.with_suffix(".err").read_text().split("]")[0] for p in ERRORS}
    assert {"error[syntax", "error[name", "error[shape", "error[type", "error[arity"} <= kinds


def test_caret_count_is_the_span_length():
    for program in ERRORS:
        lines = program.with_suffix(".err").read_text().splitlines()
        carets = [line for line in lines if line.strip().endswith("^")]
        assert len(carets) == 1, program
        assert lines[2].strip() == "|"


def test_debug_shows_the_traceback():
    code, _, err = run_dp("--debug", "check", "tests/programs/errors/shape.dp", cwd=ROOT)
    assert code == 1 and "Traceback" in err and "error[shape]" in err


def test_missing_program_file():
    code, out, err = run_dp("check", "no/such/file.dp", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == "error[file]: no such file: no/such/file.dp\n"


def test_bad_command_line_is_a_usage_error():
    code, _, err = run_dp("train", cwd=ROOT)
    assert code == 2
    assert err.startswith("error[usage]: the following arguments are required: file")
