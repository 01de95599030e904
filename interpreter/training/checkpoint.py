"""Checkpoints: safetensors files with a checksum, written atomically.

A dp checkpoint is a safetensors file whose `__metadata__` holds the caller's metadata plus
`format: "dp-checkpoint-1"` and `sha256`, a digest over every tensor's name, dtype, shape and
bytes (in sorted name order). Nothing here can execute code from a file: there is no pickle
and no fallback to an unsafe loader. The header is validated field by field before the bytes
reach safetensors (safetensors_header.py), and every problem is a `DpError('checkpoint', ...)`.

Writing (`save_checkpoint`) goes to `<path>.tmp`, is fsynced, the current `<path>` is kept as
`<path>.previous`, `<path>.tmp` is renamed over `<path>` and the directory is fsynced. `<path>`
always names a complete file (old or new). A stray `<path>.tmp` or `<path>.previous.tmp` left
by a crash is never read, and the next save to `<path>` removes it first (`_remove_stale`):
only those two names, beside that checkpoint, and never a folder. Loading leaves them alone: a
`dp run` may read a checkpoint while `dp train` is writing its next one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
from typing import Mapping

import numpy as np
from dp.dsl.errors import DpError, Span

from .safetensors_header import NP_TO_ST, ST_TO_NP, bad_file, parse_header, shape_str, sniff

__all__ = ["FORMAT", "TRAINING_STATE", "save_checkpoint", "load_checkpoint",
           "load_checkpoint_or_previous", "load_weights", "check_against", "check_weights",
           "put_weights", "tensor_digest", "previous_path", "temp_path", "program_digest",
           "check_program"]

FORMAT = "dp-checkpoint-1"
TRAINING_STATE = ("optimizer.", "rng.")  # the tensors of a checkpoint that are not parameters
MAX_HEADER = 100 * 1024 * 1024


def previous_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + ".previous"


def temp_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + ".tmp"


def _st_name(dtype: np.dtype) -> str | None:
    return NP_TO_ST.get((dtype.kind, dtype.itemsize))


def tensor_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of each tensor, names sorted."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        st = _st_name(a.dtype)
        if st is None:
            raise TypeError(f"tensor {name!r} has unsupported dtype {a.dtype}")
        nb = name.encode("utf-8")
        h.update(struct.pack("<Q", len(nb)))
        h.update(nb)
        h.update(st.encode("ascii").ljust(8, b"\0"))
        h.update(struct.pack("<Q", a.ndim))
        h.update(struct.pack(f"<{a.ndim}Q", *a.shape))
        le = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
        h.update(struct.pack("<Q", le.nbytes))
        h.update(le.reshape(-1).view(np.uint8))
    return h.hexdigest()




# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return                      # platforms without directory handles (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(path: str) -> None:
    """Remove what a save of `path` killed midway left: `<path>.tmp`, `<path>.previous.tmp`
    (a file or a link, never followed; a folder of that name is left, and the save fails)."""
    for stray in (temp_path(path), previous_path(path) + ".tmp"):
        try:
            if not stat.S_ISDIR(os.lstat(stray).st_mode):
                os.unlink(stray)
        except FileNotFoundError:
            pass


def _write_file(target: str, data: bytes) -> None:
    """A new file (O_EXCL: never through a link or into a file someone else has open)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_previous(path: str) -> None:
    """Make `<path>.previous` a complete copy of the current `<path>` without ever removing
    `<path>`: hard-link (or copy) it to a temp name, fsync, rename over `.previous`. When
    `.previous` already is `<path>` (a save killed after this step, before its rename), there
    is nothing to do: a rename between two links of one file does nothing, and would leave
    the temp name behind."""
    prev = previous_path(path)
    prev_tmp = prev + ".tmp"
    try:
        os.unlink(prev_tmp)
    except FileNotFoundError:
        pass
    try:
        if os.path.samefile(path, prev):
            return
    except OSError:  # no `.previous` yet
        pass
    try:
        os.link(path, prev_tmp)
    except OSError:
        shutil.copyfile(path, prev_tmp)
        fd = os.open(prev_tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(prev_tmp, prev)


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                    metadata: Mapping[str, str], keep_previous: bool = True) -> None:
    """Write `tensors` and `metadata` (str -> str) to `path` atomically, keeping the file that
    was there as `<path>.previous` (unless `keep_previous` is false: a best checkpoint).
    Non-finite float values are refused (the old checkpoint is left as it was), as are names
    and dtypes safetensors cannot hold (TypeError/ValueError: those are programming errors)."""
    import safetensors.numpy

    p = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        a = np.asarray(a)
        if _st_name(a.dtype) is None:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which a checkpoint cannot "
                            f"hold (expected bool, integer or float)")
        a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            first = np.unravel_index(int(np.argmin(np.isfinite(a).reshape(-1))), a.shape)
            raise DpError("checkpoint", f"refusing to save checkpoint '{p}': tensor '{name}' "
                                        f"has a non-finite value ({a[first]}) at index "
                                        f"{list(map(int, first))}; the previous checkpoint "
                                        f"is kept")
        arrays[name] = a
    meta: dict[str, str] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"checkpoint metadata must map str to str, got {k!r}: {v!r}")
        meta[k] = v
    meta["format"] = FORMAT
    meta["sha256"] = tensor_digest(arrays)
    data = safetensors.numpy.save(arrays, metadata=meta)

    directory = os.path.dirname(os.path.abspath(p))
    tmp = temp_path(p)
    try:
        if not os.path.isdir(directory):
            raise DpError("checkpoint", f"cannot write checkpoint '{p}': directory "
                                        f"'{directory}' does not exist")
        if os.path.isdir(p):
            raise DpError("checkpoint", f"cannot write checkpoint '{p}': it is a directory")
        _remove_stale(p)
        _write_file(tmp, data)
        if keep_previous and os.path.exists(p):
            _keep_previous(p)
        os.replace(tmp, p)
        _fsync_dir(directory)
    except OSError as e:
        for stray in (tmp, previous_path(p) + ".tmp"):
            try:
                os.unlink(stray)
            except OSError:
                pass
        raise DpError("checkpoint", f"cannot write checkpoint '{p}': "
                                    f"{e.strerror or e}") from None


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, span: Span | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and verify a dp checkpoint; returns (tensors, metadata). The metadata includes
    `format` and `sha256`. Anything else than an intact dp checkpoint is a DpError."""
    p = os.fspath(path)
    tensors, meta = _read(p, span, "checkpoint file", ("run `dp train` first to create it",))
    if "format" not in meta:
        raise DpError("checkpoint", f"'{p}' is a safetensors file but not a dp checkpoint: "
                                    f"its metadata has no 'format' entry (expected {FORMAT})",
                      span)
    if meta["format"] != FORMAT:
        raise DpError("checkpoint", f"checkpoint '{p}' has format {meta['format']!r}; this dp "
                                    f"reads {FORMAT!r}", span)
    _verify(p, tensors, meta, span)
    return tensors, dict(meta)


def load_weights(path: str | os.PathLike, span: Span | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parameters by path from any safetensors file (PyTorch's `save_file` writes one);
    returns (tensors, metadata). A dp checkpoint is verified like one, and its training
    state (optimizer, random streams) left out: only parameters are weights."""
    p = os.fspath(path)
    tensors, meta = _read(p, span, "weights file")
    if meta.get("format") == FORMAT:
        _verify(p, tensors, meta, span)
        tensors = {k: v for k, v in tensors.items() if not k.startswith(TRAINING_STATE)}
    return tensors, dict(meta)


def _read(p: str, span: Span | None, what: str, notes: tuple[str, ...] = ()
          ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file, its header validated first."""
    import safetensors.numpy

    if not os.path.exists(p):
        raise DpError("checkpoint", f"{what} '{p}' does not exist", span, notes)
    if os.path.isdir(p):
        raise DpError("checkpoint", f"{what.split()[0]} '{p}' is a directory, expected a file",
                      span)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise bad_file(p, f"it is only {len(head)} bytes long (a safetensors file starts "
                              f"with an 8-byte header length)", span)
            (n,) = struct.unpack("<Q", head)
            # a header length such as 0x480 starts like a pickle: a JSON header rules it out
            sniffed = sniff(head) if f.read(1) != b"{" else None
            if sniffed:
                raise bad_file(p, sniffed, span)
            f.seek(8)
            if n > MAX_HEADER:
                raise bad_file(p, f"the header length {n} is larger than the 100 MB limit", span)
            if n > size - 8:
                raise bad_file(p, f"the header length {n} is larger than the rest of the file "
                              f"({size - 8} bytes; truncated or not safetensors)", span)
            header = f.read(n)
            buffer_len = size - 8 - n
            meta, entries = parse_header(p, header, buffer_len, span)
            f.seek(0)
            data = f.read()
    except OSError as e:
        raise DpError("checkpoint", f"{what.split()[0]} '{p}' cannot be read "
                                    f"({e.strerror or e})", span) from None
    if len(data) != size:
        raise DpError("checkpoint", f"{what.split()[0]} '{p}' changed while it was being read",
                      span)
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as e:          # noqa: BLE001 -- validated above; belt and braces
        raise bad_file(p, f"safetensors refused it ({str(e)[:200]})", span) from None
    if set(tensors) != set(entries):
        raise bad_file(p, "safetensors read different tensors than the header lists", span)
    for name, a in tensors.items():
        dt, shape, _, _ = entries[name]
        if a.dtype != ST_TO_NP[dt] or list(a.shape) != shape:
            raise bad_file(p, f"tensor '{name}' was read as {a.dtype} {list(a.shape)}, the header "
                          f"says {dt} {shape_str(shape)}", span)
    for name in sorted(tensors):
        a = tensors[name]
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            first = np.unravel_index(int(np.argmin(np.isfinite(a).reshape(-1))), a.shape)
            raise DpError("checkpoint", f"{what.split()[0]} '{p}': parameter '{name}' has a "
                                        f"non-finite value ({a[first]}) at index "
                                        f"{list(map(int, first))}; expected finite numbers",
                          span)
    return tensors, meta


def _verify(p: str, tensors: dict[str, np.ndarray], meta: dict[str, str],
            span: Span | None) -> None:
    """A dp checkpoint's checksum against its tensors."""
    if "sha256" not in meta:
        raise DpError("checkpoint", f"checkpoint '{p}' has no sha256 in its metadata, so its "
                                    f"data cannot be verified", span)
    if tensor_digest(tensors) != meta["sha256"]:
        intact = ((f"the previous checkpoint may be intact: {previous_path(p)}",)
                  if os.path.exists(previous_path(p)) else ())  # never one that is not there
        raise DpError("checkpoint", f"checkpoint data is corrupt (checksum mismatch) in '{p}'",
                      span, intact)


def load_checkpoint_or_previous(path: str | os.PathLike, span: Span | None = None
                                ) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """`load_checkpoint(path)`, falling back to `<path>.previous` when `path` is missing or
    damaged; returns (tensors, metadata, the path actually read). If both fail, the error
    for `path` is raised with a note about `.previous`."""
    p = os.fspath(path)
    try:
        t, m = load_checkpoint(p, span)
        return t, m, p
    except DpError as first:
        prev = previous_path(p)
        if not os.path.exists(prev):
            raise
        try:
            t, m = load_checkpoint(prev, span)
        except DpError as second:
            raise first.with_note(f"{prev} could not be used either: {second.message}") \
                from None
        return t, m, prev


# --------------------------------------------------------------------------------------------
# matching a program
# --------------------------------------------------------------------------------------------
def check_against(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                  path: str | os.PathLike, span: Span | None = None) -> None:
    """The checkpoint must hold exactly the program's parameters, with the same shapes. The
    first problem is the message; any further ones are notes."""
    p = os.fspath(path)
    problems: list[str] = []
    for name, shape in expected.items():
        want = tuple(int(d) for d in shape)
        if name not in tensors:
            problems.append(f"checkpoint '{p}' has no parameter '{name}' (the program expects "
                            f"shape {shape_str(want)})")
            continue
        got = tuple(int(d) for d in np.shape(tensors[name]))
        if got != want:
            problems.append(f"parameter '{name}' has the wrong shape in checkpoint '{p}': the "
                            f"program expects {shape_str(want)}, the checkpoint has "
                            f"{shape_str(got)}")
    for name in tensors:
        if name not in expected:
            got = tuple(np.shape(tensors[name]))
            problems.append(f"checkpoint '{p}' has a parameter '{name}' (shape "
                            f"{shape_str(got)}) that the program does not declare")
    if problems:
        notes = tuple(problems[1:11])
        if len(problems) > 11:
            notes += (f"... and {len(problems) - 11} more mismatches",)
        raise DpError("checkpoint", problems[0], span, notes)


def program_digest(tprog, sources: Mapping[str, str], model: str,
                   sets: Mapping[str, str] | None = None) -> str:
    """A checkpoint's `program_sha256`: sha256 of the definitions (signature and body) of
    `model` and of every module it uses, the standard library's too, as parsed, with the
    configuration `--set` chose. Comments, blank lines, layout, the order of the
    definitions, the train and run blocks and the other modules do not change it; any edit
    of what the model computes does, even one that keeps every shape (relu to tanh)."""
    from dp.dsl import ast
    from dp.dsl.check_graph import uses
    from dp.dsl.choices import choose
    from dp.dsl.loader import stdlib_programs, stdlib_sources
    from dp.dsl.parser import parse

    stdlib = stdlib_sources()
    programs = stdlib_programs() + [parse(text, path) for path, text in sources.items()
                                    if path not in stdlib]
    programs, _ = choose(programs, dict(sets or {}), settings=False)
    used, todo = set(), [model]
    while todo:
        name = todo.pop()
        if name not in used and name in tprog.defs:
            used.add(name)
            todo.extend(u.module for u in uses(tprog.defs[name]))
    texts = sorted(repr(item) for program in programs for item in program.items  # no spans
                   if isinstance(item, (ast.Signature, ast.Definition)) and item.name in used)
    return hashlib.sha256("\n".join(["dp-model-1", *texts]).encode("utf-8")).hexdigest()


def check_program(meta: Mapping[str, str], digest: str, path: str | os.PathLike, model: str,
                  span: Span | None = None, text: str | None = None) -> None:
    """A checkpoint loads only into the model that wrote it (`program_digest`); one without
    a digest (`net.save` writes none) is not checked, and one that holds the sha256 of the
    program's `text` (as dp wrote before the digest) came from this very program."""
    trained = meta.get("program_sha256")
    if trained is None or trained == digest or (
            text is not None and trained == hashlib.sha256(text.encode("utf-8")).hexdigest()):
        return
    p, program = os.fspath(path), span.file if span is not None else "FILE"
    was = meta.get("model")
    what = (f"it holds {was}, not {model}" if was and was != model else
            f"the definition of {model}, or of a module it uses, has changed since")
    raise DpError("checkpoint", f"checkpoint '{p}' was trained by a different program: {what}",
                  span, (f"to use its parameters anyway, load them as weights: dp run "
                         f"{program} --weights {p} (or dp train {program} --init-from {p} to "
                         "train on)",
                         "editing comments, the train or run blocks or other modules keeps a "
                         "checkpoint; editing the model's modules does not"))


def check_weights(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                  where: str, whose: str, span: Span | None = None) -> None:
    """Weights must be exactly the parameters `expected` (by path) of `whose`, with their
    shapes, in floating point: one error lists every tensor that is missing, extra or
    misshapen. `where` names the weights: "'w.safetensors'"."""
    missing = [name for name in expected if name not in tensors]
    extra = [name for name in tensors if name not in expected]
    wrong = []
    for name, shape in expected.items():
        a = tensors.get(name)
        if a is None:
            continue
        if tuple(np.shape(a)) != tuple(shape):
            wrong.append(f"wrong shape: '{name}' is {shape_str(np.shape(a))}, {whose} expects "
                         f"{shape_str(shape)}")
        elif np.asarray(a).dtype.kind != "f":
            wrong.append(f"wrong type: '{name}' is {np.asarray(a).dtype}, {whose} expects "
                         f"floating point")
    if not (missing or extra or wrong):
        return
    counts = [f"{len(found)} {word}" for found, word in
              ((missing, "missing"), (extra, "extra"), (wrong, "misshapen")) if found]
    notes = tuple([f"missing: '{name}' {shape_str(expected[name])}" for name in missing]
                  + [f"extra: '{name}' {shape_str(np.shape(tensors[name]))}" for name in extra]
                  + wrong)
    if extra and len(missing) == len(expected):  # another naming, such as PyTorch's
        notes += (f"the parameters are named like '{missing[0]}', these tensors like "
                  f"'{extra[0]}'",)
    raise DpError("weights", f"the tensors of {where} do not match the parameters of {whose}: "
                             f"{', '.join(counts)}", span, notes)


def put_weights(models: list, tensors: Mapping[str, np.ndarray], meta: Mapping[str, str],
                where: str, strict: bool = True, span: Span | None = None) -> None:
    """Weights into models (each `Model` takes the tensors named by its parameter paths),
    checked by `check_weights` first, so that a mismatch changes nothing. Not strict: only
    the tensors whose names match are loaded (a wrong shape is still an error). A dp
    checkpoint's vocabulary comes along, so that text maps to the same ids."""
    from dp.interpreter.data.text import Vocab

    expected = {p: v.shape for m in models for p, v in m.params.items()}
    if not strict:
        tensors = {k: v for k, v in tensors.items() if k in expected}
        expected = {k: s for k, s in expected.items() if k in tensors}
    check_weights(tensors, expected, where, " and ".join(m.name for m in models), span)
    for m in models:
        for path, view in m.params.items():
            if path in tensors:
                np.copyto(view, tensors[path], casting="unsafe")
        if "vocab" in meta:
            m.vocab = Vocab.from_json(meta["vocab"], where, span)
