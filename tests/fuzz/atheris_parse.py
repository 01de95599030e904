"""Coverage-guided fuzz of dp's front end: bytes -> decode -> parse -> check with the stdlib.

Not run in CI (atheris is not a dependency of dp). To run it, in dp's virtual environment:

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/atheris_parse.py -max_total_time=600

Any further arguments are libFuzzer's (`-runs=N`, `-jobs=N`, a corpus folder). Without a corpus
folder one is made under the temporary directory and seeded with programs/ and stdlib/; without
`-artifact_prefix`, reproducers go to tests/fuzz/crashes/ (`crash-<sha1>`). Replay one with
`python tests/fuzz/atheris_parse.py tests/fuzz/crashes/crash-...`; once the bug is fixed, add the
reproducer to KNOWN_CRASHES in tests/test_fuzz_mutation.py, which then keeps it fixed.

What counts as a crash: any exception but a DpError (a user would see error[internal]), a
RecursionError, and a DpError whose span lies outside the text (`span_problem`) or that cannot
be rendered. The input is read as `dp check` reads a file: UTF-8 (a byte-order mark skipped),
then parsed and checked together with the standard library.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FILE = "fuzz.dp"

with atheris.instrument_imports(include=["dp", "lark"]):
    from dp.dsl.checker import check
    from dp.dsl.errors import DpError, DpErrors, format_error
    from dp.dsl.loader import stdlib_programs, stdlib_sources
    from dp.dsl.parser import parse

sys.path.insert(0, str(HERE.parent))
from conftest import span_problem  # noqa: E402  (the fuzz tests' own bounds on a span)

STDLIB = stdlib_programs()
SOURCES = stdlib_sources()


def front_end(data: bytes) -> None:
    """What `dp check` does with the bytes of a file, up to the check; only placed DpErrors
    may come out."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return  # read_program's error[syntax] with the byte offset (tests/test_limits.py)
    try:
        check(STDLIB + [parse(text, FILE)])
    except DpError as err:
        sources = dict(SOURCES, **{FILE: text if text.endswith("\n") else text + "\n"})
        format_error(err, sources)
        for e in err.errors if isinstance(err, DpErrors) else [err]:
            problem = span_problem(e, sources)
            if problem:
                raise AssertionError(f"error[{e.kind}] {e.message!r}: {problem}") from None


def _defaults(argv: list[str]) -> list[str]:
    """libFuzzer's arguments, with a seeded corpus and the reproducers' folder unless given."""
    args = list(argv)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        (HERE / "crashes").mkdir(exist_ok=True)
        args.insert(1, f"-artifact_prefix={HERE / 'crashes'}/")
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="dp-fuzz-corpus-"))
        for f in sorted((ROOT / "programs").glob("*.dp")) + sorted((ROOT / "stdlib").glob("*.dp")):
            shutil.copy(f, corpus / f.name)
        args.append(str(corpus))
    return args


def main() -> None:
    atheris.Setup(_defaults(sys.argv), front_end)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
