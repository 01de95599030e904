"""Stages 1-2 together: read files, parse them with the standard library first, check.

The standard library is a set of .dp files shipped in the `dp.stdlib` package, loaded in a
fixed order so that a user's program can use every module in it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import ast, cache
from .checker import check
from .choices import check_chosen
from .errors import DpError, Span
from .parser import parse
from .typed import TProgram

STDLIB_ORDER = ("prelude.dp", "feedforward.dp", "vision.dp", "sequences.dp", "attention.dp")


def stdlib_dir() -> Path:
    """The folder of the standard library's .dp files (source tree or installed package)."""
    import dp.stdlib

    return Path(dp.stdlib.__file__).resolve().parent


def stdlib_sources() -> dict[str, str]:
    """Path -> text of each standard library file, in STDLIB_ORDER."""
    folder = stdlib_dir()
    return {str(folder / name): (folder / name).read_text(encoding="utf-8")
            for name in STDLIB_ORDER}


def stdlib_programs(sources: dict[str, str] | None = None) -> list[ast.Program]:
    """The standard library parsed: once in a process, and kept between runs (cache.py) under
    a key of its paths, its texts and the front end's code. The programs are immutable, so
    every caller may share them."""
    sources = stdlib_sources() if sources is None else sources
    key = cache.digest(cache.front_end_key(), *(s for item in sources.items() for s in item))
    if key not in _PARSED:
        _PARSED.clear()
        _PARSED[key] = cache.cached(
            "stdlib", key, lambda: [parse(text, path) for path, text in sources.items()],
            AST_CLASSES)
    return list(_PARSED[key])


_PARSED: dict[str, list[ast.Program]] = {}  # the key of the standard library's texts -> them
AST_CLASSES = (Span, *(c for c in vars(ast).values()
                       if isinstance(c, type) and dataclasses.is_dataclass(c)))


def read_program(path: str) -> tuple[str, ast.Program]:
    """Read and parse one user file; unreadable files are DpErrors, not tracebacks."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DpError("file", f"no such file: {path}") from None
    except OSError as e:
        raise DpError("file", f"cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is no text
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DpError("syntax", f"the file is not UTF-8 text (bad byte at offset {e.start})",
                      Span(path, line, col, line, col + 1)) from None
    return text, parse(text, path)


def load_programs(paths: list[str], sets: dict[str, str] | None = None,
                  settings: bool = True) -> tuple[TProgram, dict[str, str]]:
    """Parse and check user files with the standard library; also return the source texts.
    `sets` (`dp train --set`) choose configuration arguments of the trained model before the
    check (choices.py); the names it leaves are settings, for check_blocks.override.

    A standard library file named on the command line is checked once, not twice."""
    folder = stdlib_dir()
    sources = stdlib_sources()
    programs = stdlib_programs(sources)
    for path in paths:
        if Path(path).resolve().parent == folder and Path(path).name in STDLIB_ORDER:
            continue
        text, program = read_program(path)
        sources[path] = text
        programs.append(program)
    if sets:
        return check_chosen(programs, sets, settings), sources
    return check(programs), sources


def load(paths: list[str]) -> TProgram:
    """Parse and check user files together with the standard library."""
    return load_programs(paths)[0]


def load_text(text: str, file: str = "<input>") -> TProgram:
    return check(stdlib_programs() + [parse(text, file)])
