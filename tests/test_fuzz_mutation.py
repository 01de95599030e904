"""Mutation fuzz of the shipped programs: only DpErrors, with spans inside the text, may come out.

Every file of programs/ and stdlib/ is mutated (a character deleted, duplicated or swapped, the
text truncated, a token of the language or a random byte inserted, a line deleted or doubled)
from a fixed seed, and each mutant goes through what `dp check` does, in-process: read and
parse, check with the standard library (a mutated stdlib file replaces its original), lower
every module of the file whose signature is concrete, and render the error. Any exception but a
DpError is a bug a user would see as a traceback (docs/architecture.md); so is an error whose
span points outside the text it renders, and a mutant that takes seconds (a hang).

The numbers: 500 distinct mutants of each file from seed 0, none may raise anything but a
DpError (a RecursionError included), and each takes under 2 s. The first 300 of each file
run in the quick loop (`-m "not slow"`), the other 200 are marked slow: all 500 take about
two and a half minutes on 2 busy cores, most of it checking (every mutant is checked with
the whole standard library, and a mutated standard library file with every program of
programs/ as well).
"""

from __future__ import annotations

import difflib
import random
import re
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import span_problem
from dp.dsl import ast
from dp.dsl.checker import check
from dp.dsl.errors import DpError, DpErrors, format_error
from dp.dsl.loader import STDLIB_ORDER, read_program, stdlib_dir, stdlib_programs
from dp.dsl.parser import parse
from dp.interpreter.core.lower import lower

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
MUTANTS = 500  # per file: the first QUICK in the quick loop, the rest marked slow
QUICK = 300
LIMIT = 2.0  # seconds a mutant may take: a guard against hangs, not a benchmark
PROGRAMS = sorted(p.name for p in (ROOT / "programs").glob("*.dp"))
TOKENS = ("->", "R^", "(", ")", ";", "=", ":", ",", "^", "[", "]", "~", "@", "*", "+", "-",
          "/", ".", "Token[", "map", "scan", "repeat", "param", "train", "run:", "implements",
          "\n", "\n  ", "  ", "    ", "\t", "#")
NUMBERS = ("0", "1", "2", "3", "0.5", "-1", "1e9", "64", "99999999999", "1.5e-3", "007")


# --- mutations --------------------------------------------------------------------------------
def _names(text: str) -> list[str]:
    """The names in the file's code, and in the standard library's (a program may misuse any
    of them)."""
    std = "".join((stdlib_dir() / n).read_text(encoding="utf-8") for n in STDLIB_ORDER)
    code = re.sub(r"#[^\n]*", "", text + "\n" + std)
    return sorted(set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", code)))


def _insert(s, i, piece):
    return s[:i] + piece + s[i:]


def _mutate_once(rng: random.Random, s, names: list[str], as_bytes: bool):
    """One edit of `s` (text, or UTF-8 bytes for a user file, so that bytes can be invalid)."""
    n = len(s)
    i = rng.randrange(n + 1)
    op = rng.choice(("delete", "duplicate", "swap", "truncate", "token", "token", "name",
                     "rename", "rename", "number", "renumber", "byte", "line", "line"))
    if n == 0:
        op = "token"
    if op == "delete":
        return s[:i] + s[i + 1:]
    if op == "duplicate":
        return s[:i + 1] + s[i:]
    if op == "swap" and i + 1 < n:
        return s[:i] + s[i + 1:i + 2] + s[i:i + 1] + s[i + 2:]
    if op == "truncate":
        return s[:i]
    if op == "line":
        return _line_edit(rng, s, as_bytes)
    if op == "rename":
        return _replace(rng, s, r"[A-Za-z_][A-Za-z_0-9]*", names, as_bytes)
    if op == "renumber":
        return _replace(rng, s, r"\b[0-9]+(\.[0-9]+)?\b", NUMBERS, as_bytes)
    if op == "byte":
        b = rng.randrange(256)
        return _insert(s, i, bytes([b]) if as_bytes else chr(b))
    piece = {"token": lambda: rng.choice(TOKENS), "name": lambda: rng.choice(names),
             "number": lambda: rng.choice(NUMBERS)}.get(op, lambda: rng.choice(TOKENS))()
    return _insert(s, i, piece.encode() if as_bytes else piece)


def _replace(rng: random.Random, s, pattern: str, choices, as_bytes: bool):
    """One match of `pattern` replaced by one of `choices` (`act = relu` -> `act = seq_mean`,
    `R^64` -> `R^0`)."""
    spots = list(re.finditer(pattern.encode() if as_bytes else pattern, s))
    if not spots:
        return s
    m, new = rng.choice(spots), rng.choice(choices)
    return s[:m.start()] + (new.encode() if as_bytes else new) + s[m.end():]


def _line_edit(rng: random.Random, s, as_bytes: bool):
    nl = b"\n" if as_bytes else "\n"
    lines = s.split(nl)
    k = rng.randrange(len(lines))
    if rng.random() < 0.5:
        del lines[k]
    else:
        lines.insert(k, lines[rng.randrange(len(lines))])
    return nl.join(lines)


def mutants(name: str, text: str, as_bytes: bool) -> list:
    """MUTANTS distinct mutants of `text`, the same ones on every run (a fixed seed); none
    only edits comments, which would check as the original does and only cost time."""
    rng = random.Random(f"{SEED}:{name}")
    names, seen, out = _names(text), {text}, []
    start = text.encode() if as_bytes else text
    for _ in range(MUTANTS * 20):
        m = start
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            m = _mutate_once(rng, m, names, as_bytes)
        key = m.decode("latin-1") if as_bytes else m
        if key not in seen and not _only_comments(m, text):
            seen.add(key)
            out.append(m)
        if len(out) == MUTANTS:
            break
    return out


def _only_comments(mutant, text: str) -> bool:
    """Whether the mutant differs from `text` only inside comments (which run to the end of
    the line: the lexer sees the same tokens, and the same lines and columns)."""
    if isinstance(mutant, bytes):
        try:
            mutant = mutant.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return _code(mutant) == _code(text)


def _code(text: str) -> str:
    """The text without its comments (a `#` in a string does not start one)."""
    return _COMMENT.sub(lambda m: m.group() if m.group().startswith('"') else "", text)


_COMMENT = re.compile(r'"[^"\n]*"|#[^\n]*')


# --- one mutant through the stages ------------------------------------------------------------
@dataclass
class Outcome:
    """What went wrong with one mutant: `kind` is crash, span or slow; `key` deduplicates."""

    kind: str
    stage: str
    key: tuple
    detail: str


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"still running after {3 * LIMIT:.0f} s")


class Target:
    """One file to mutate, with the standard library parsed once. A mutated stdlib file is
    checked with the shipped programs too, and their models lowered: they are its users."""

    def __init__(self, name: str, tmp: Path, std: list[ast.Program]):
        self.name, self.std, self.strict_end = name, std, False
        self.stdlib = name not in PROGRAMS
        folder = stdlib_dir()
        self.path = folder / name if self.stdlib else ROOT / "programs" / name
        self.text = self.path.read_text(encoding="utf-8")
        self.file = str(self.path) if self.stdlib else str(tmp / name)
        self.sources = {str(folder / n): (folder / n).read_text(encoding="utf-8")
                        for n in STDLIB_ORDER}
        self.users: list[ast.Program] = []
        if self.stdlib:
            for p in PROGRAMS:
                path = str(ROOT / "programs" / p)
                self.sources[path] = (ROOT / "programs" / p).read_text(encoding="utf-8")
                self.users.append(parse(self.sources[path], path))
        self.lowered = {self.file} | {u.file for u in self.users}

    def mutants(self) -> list:
        return mutants(self.name, self.text, not self.stdlib)

    def run(self, mutant) -> Outcome | None:
        """Parse, check and lower one mutant; None if only well-placed DpErrors came out."""
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, 3 * LIMIT)
        began = time.perf_counter()
        try:
            out = self._stages(mutant)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        took = time.perf_counter() - began
        if out is None and took > LIMIT:
            return Outcome("slow", "all", ("slow", "all"), f"took {took:.2f} s")
        return out

    def _stages(self, mutant) -> Outcome | None:
        sources, stage = dict(self.sources), "parse"
        try:
            if self.stdlib:
                sources[self.file] = mutant
                index = STDLIB_ORDER.index(self.name)
                programs = list(self.std)
                programs[index] = parse(mutant, self.file)
                programs += self.users
            else:
                Path(self.file).write_bytes(mutant)
                sources[self.file] = mutant.decode("utf-8", errors="replace")
                programs = self.std + [read_program(self.file)[1]]
            stage = "check"
            tprog = check(programs)
            stage = "lower"
            for name, tdef in tprog.defs.items():
                if tdef.span.file in self.lowered and _concrete(tprog, name):
                    lower(tprog, name, 2)
        except DpError as e:
            return self._placed(e, stage, sources)
        except _Hang as e:
            return Outcome("slow", stage, ("slow", stage), str(e))
        except Exception as e:  # noqa: BLE001 - every other exception is the finding
            return _crash(e, stage)
        return None

    def _placed(self, err: DpError, stage: str, sources: dict[str, str]) -> Outcome | None:
        try:
            format_error(err, sources)
        except Exception as e:  # noqa: BLE001
            return _crash(e, "render")
        for e in err.errors if isinstance(err, DpErrors) else [err]:
            problem = span_problem(e, sources, self.strict_end) or render_problem(e, sources)
            if problem:
                return Outcome("span", stage, ("span", e.kind, problem.split(":")[0]),
                               f"error[{e.kind}]: {e.message}\n  at {e.span}\n  {problem}")
        return None


def _concrete(tprog, name: str) -> bool:
    sig = tprog.signatures[name]
    return all(isinstance(d, int) for t in sig.args + (sig.result,) for d in t.shape)


def render_problem(err: DpError, sources: dict[str, str]) -> str | None:
    """Why the rendered error does not quote the line its span is on, or None if it does."""
    s = err.span
    if s is None:
        return None
    line = sources[s.file].split("\n")[s.line - 1].removesuffix("\r").expandtabs(1)
    if f" {s.line} | {line}\n" not in format_error(err, sources) + "\n":
        return f"rendered line: the error does not quote line {s.line}, {line!r}"
    return None


def _crash(e: BaseException, stage: str) -> Outcome:
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if f.filename.startswith(str(ROOT)) and "/tests/" not in f.filename
              and "/.venv/" not in f.filename]
    where = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno}" if frames \
        else "?"
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    return Outcome("crash", stage, ("crash", type(e).__name__, where),
                   f"{last[:300]}\n  innermost dp frame: {where} "
                   f"({frames[-1].name if frames else '?'})")


# --- minimising -------------------------------------------------------------------------------
def minimise(target: Target, mutant, key: tuple, budget: int = 600):
    """A smaller mutant with the same failure (same key): chunks of lines, then of characters,
    deleted while the failure stays."""
    nl = b"\n" if isinstance(mutant, bytes) else "\n"
    tries = [budget]

    def same(candidate) -> bool:
        tries[0] -= 1
        out = target.run(candidate)
        return out is not None and out.key == key

    lines = mutant.split(nl)
    lines = _ddmin(lines, lambda ls: same(nl.join(ls)), tries)
    chars = list(nl.join(lines))
    join = bytes if isinstance(mutant, bytes) else "".join
    chars = _ddmin(chars, lambda cs: same(join(cs)), tries)
    return join(chars)


def _ddmin(items: list, keeps, tries: list[int]) -> list:
    size = max(1, len(items) // 2)
    while size >= 1 and tries[0] > 0:
        i, changed = 0, False
        while i < len(items) and tries[0] > 0:
            candidate = items[:i] + items[i + size:]
            if candidate and keeps(candidate):
                items, changed = candidate, True
            else:
                i += size
        if not changed:
            size //= 2
    return items


def _shown(mutant) -> str:
    """The mutant as text, its invisible characters escaped (`\\x1c`)."""
    text = mutant.decode("utf-8", errors="backslashreplace") if isinstance(mutant, bytes) \
        else mutant
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


# Minimal reproducers of crashes found and not yet fixed, by the file they are a mutant of:
# a mutant that fails with the same key (exception, innermost frame) is not reported again,
# and each reproducer is a strict xfail below, which fails once the crash is fixed (then
# remove it here).
KNOWN_CRASHES: dict[str, bytes] = {
    # none now; the last (a sequence of 9,999,999,999 tokens through SequenceToSequence) is
    # tests/test_limits.py::test_memory_a_sequence_whose_attention_passes_2_to_the_63_is_counted
}


def fuzz(target: Target, mutants: list) -> list[tuple[Outcome, object, object]]:
    """Each distinct failure of the mutants: (outcome, mutant, minimised mutant)."""
    found: dict[tuple, tuple] = {}
    if target.name in KNOWN_CRASHES:
        known = target.run(KNOWN_CRASHES[target.name])
        if known is not None:  # once fixed, test_known_crashes_are_fixed says so
            found[known.key] = None
    for mutant in mutants:
        out = target.run(mutant)
        if out is not None and out.key not in found:
            found[out.key] = (out, mutant)
    return [(out, m, minimise(target, m, out.key) if out.kind != "slow" else m)
            for out, m in filter(None, found.values())]


# --- the test ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def std() -> list[ast.Program]:
    return stdlib_programs()


PARTS = [pytest.param(slice(0, QUICK), id="quick"),
         pytest.param(slice(QUICK, MUTANTS), id="rest", marks=pytest.mark.slow)]


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("name", PROGRAMS + list(STDLIB_ORDER))
def test_mutants_raise_only_placed_dp_errors(name, part, std, tmp_path):
    target = Target(name, tmp_path, std)
    assert target.run(target.text.encode() if not target.stdlib else target.text) is None
    mutants = target.mutants()
    assert len(mutants) == MUTANTS
    failures = fuzz(target, mutants[part])
    report = [f"{out.kind} in {out.stage}: {out.detail}\n  minimised mutant:\n"
              f"{_indent(_shown(small))}\n  the mutant, against {name}:\n"
              f"{_indent(_diff(target.text, _shown(m)))}" for out, m, small in failures]
    assert not failures, f"{len(failures)} distinct failures in {name}:\n\n" + \
        "\n\n".join(report)


def _diff(old: str, new: str) -> str:
    lines = difflib.unified_diff(old.split("\n"), new.split("\n"), "original", "mutant",
                                 n=1, lineterm="")
    return "\n".join(list(lines)[2:])


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.split("\n"))


@pytest.mark.parametrize("name", sorted(KNOWN_CRASHES))
@pytest.mark.xfail(strict=True, reason="a known crash; remove it from KNOWN_CRASHES when fixed")
def test_known_crashes_are_fixed(name, std, tmp_path):
    assert Target(name, tmp_path, std).run(KNOWN_CRASHES[name]) is None
