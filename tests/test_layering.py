"""The pipeline runs one way: the front end (dsl/) never imports the interpreter."""

from __future__ import annotations

import re

from conftest import ROOT


def test_dsl_does_not_import_the_interpreter():
    for path in (ROOT / "dsl").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(dp\.)?interpreter", text, re.M), path
        assert "numpy" not in text and "numba" not in text, path
