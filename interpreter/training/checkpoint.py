"""Checkpoints: safetensors files with a checksum, written atomically.

A dp checkpoint is a safetensors file whose `__metadata__` holds the caller's metadata plus
`format: "dp-checkpoint-1"` and `sha256`, a digest over every tensor's name, dtype, shape and
bytes (in sorted name order). Nothing here can execute code from a file: there is no pickle
and no fallback to an unsafe loader. The header is validated here, field by field, before the
bytes reach safetensors, and every problem is a `DpError('checkpoint', ...)`.

Writing (`save_checkpoint`) goes to `<path>.tmp`, is fsynced, the current `<path>` is kept as
`<path>.previous`, `<path>.tmp` is renamed over `<path>` and the directory is fsynced. `<path>`
always names a complete file (old or new); a stray `<path>.tmp` left by a crash is never read
and is overwritten by the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from typing import Mapping

import numpy as np
from dp.dsl.errors import DpError, Span

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_checkpoint_or_previous",
           "check_against", "tensor_digest", "previous_path", "temp_path"]

FORMAT = "dp-checkpoint-1"
MAX_HEADER = 100 * 1024 * 1024
MAX_NDIM = 64

# safetensors dtype names <-> numpy dtypes (only those numpy represents exactly)
_ST_TO_NP = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
_NP_TO_ST = {(dt.kind, dt.itemsize): name for name, dt in _ST_TO_NP.items()}


def previous_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + ".previous"


def temp_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + ".tmp"


def _st_name(dtype: np.dtype) -> str | None:
    return _NP_TO_ST.get((dtype.kind, dtype.itemsize))


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


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


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


def _write_file(target: str, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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
    `<path>`: hard-link (or copy) it to a temp name, fsync, rename over `.previous`."""
    prev = previous_path(path)
    prev_tmp = prev + ".tmp"
    try:
        os.unlink(prev_tmp)
    except FileNotFoundError:
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
                    metadata: Mapping[str, str]) -> None:
    """Write `tensors` and `metadata` (str -> str) to `path` atomically, keeping the file that
    was there as `<path>.previous`. Non-finite float values are refused (the old checkpoint is
    left as it was), as are names and dtypes safetensors cannot hold (TypeError/ValueError:
    those are programming errors)."""
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
        _write_file(tmp, data)
        if os.path.exists(p):
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
def _bad(p: str, what: str, span: Span | None, notes: tuple[str, ...] = ()) -> DpError:
    return DpError("checkpoint", f"'{p}' is not a dp checkpoint (safetensors) file: {what}",
                   span, notes)


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "it looks like a Python pickle (dp never loads pickles: they can run code)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "it is a zip archive (a PyTorch .pt/.pth or a numpy .npz?), not safetensors"
    if head.startswith(b"\x93NUMPY"):
        return "it is a numpy .npy array, not safetensors"
    return None


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise _Duplicate(k)
        seen[k] = v
    return seen


class _Duplicate(Exception):
    def __init__(self, key):
        self.key = key


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_header(p: str, header: bytes, buffer_len: int, span: Span | None):
    """Validate the JSON header; returns (metadata, {name: (dtype, shape, begin, end)})."""
    if not header.startswith(b"{"):
        raise _bad(p, f"the header does not start with '{{' (found {header[:8]!r})", span)
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(p, f"the header is not UTF-8 (byte {e.start})", span) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as d:
        raise _bad(p, f"the header has the key {d.key!r} twice", span) from None
    except (ValueError, RecursionError) as e:
        raise _bad(p, f"the header is not valid JSON ({str(e)[:120]})", span) from None
    if not isinstance(obj, dict):
        raise _bad(p, f"the header is JSON {type(obj).__name__}, expected an object", span)

    meta = obj.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise _bad(p, "__metadata__ must map strings to strings", span)

    entries = {}
    for name, info in obj.items():
        where = f"tensor '{name}'"
        if not isinstance(info, dict):
            raise _bad(p, f"{where}: expected an object with dtype, shape and data_offsets, "
                          f"found {type(info).__name__}", span)
        keys = set(info)
        if keys != {"dtype", "shape", "data_offsets"}:
            missing = sorted({"dtype", "shape", "data_offsets"} - keys)
            extra = sorted(keys - {"dtype", "shape", "data_offsets"})
            raise _bad(p, f"{where}: expected the fields dtype, shape, data_offsets"
                          + (f"; missing {', '.join(missing)}" if missing else "")
                          + (f"; unknown {', '.join(map(str, extra))}" if extra else ""), span)
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dt, str) or dt not in _ST_TO_NP:
            raise _bad(p, f"{where}: unknown or unsupported dtype {dt!r} (expected one of "
                          f"{', '.join(_ST_TO_NP)})", span)
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise _bad(p, f"{where}: shape must be a list of integers, found {shape!r:.80}",
                       span)
        if len(shape) > MAX_NDIM:
            raise _bad(p, f"{where}: {len(shape)} dimensions, at most {MAX_NDIM} allowed", span)
        if any(d < 0 for d in shape):
            raise _bad(p, f"{where}: negative dimension in shape {_shape_str(shape)}", span)
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)):
            raise _bad(p, f"{where}: data_offsets must be two integers [begin, end], found "
                          f"{offs!r:.80}", span)
        begin, end = offs
        if not 0 <= begin <= end:
            raise _bad(p, f"{where}: data_offsets [{begin}, {end}] are not 0 <= begin <= end",
                       span)
        if end > buffer_len:
            raise _bad(p, f"{where}: data_offsets [{begin}, {end}] run past the end of the "
                          f"data ({buffer_len} bytes; the file is truncated or corrupt)", span)
        itemsize = _ST_TO_NP[dt].itemsize
        count = 0 if 0 in shape else 1
        if count:
            for d in shape:
                count *= d
                if count * itemsize > buffer_len:
                    break
        if count * itemsize != end - begin:
            if count * itemsize > buffer_len:
                big = 1
                for d in shape:
                    big *= d
                if big >= 2 ** 64:
                    need = "more than 2^64 elements (the product overflows 64 bits)"
                else:
                    need = f"{big * itemsize} bytes ({big} elements)"
                raise _bad(p, f"{where}: dtype {dt} and shape {_shape_str(shape)} need "
                              f"{need}, but data_offsets [{begin}, {end}] span {end - begin} "
                              f"and the whole data section is {buffer_len} bytes", span)
            raise _bad(p, f"{where}: dtype {dt} and shape {_shape_str(shape)} need "
                          f"{count * itemsize} bytes, but data_offsets [{begin}, {end}] span "
                          f"{end - begin}", span)
        entries[name] = (dt, shape, begin, end)

    pos = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < pos:
            raise _bad(p, f"tensor '{name}': data_offsets [{begin}, {end}] overlap the "
                          f"previous tensor (which ends at {pos})", span)
        if begin > pos:
            raise _bad(p, f"tensor '{name}': a gap of {begin - pos} bytes before its "
                          f"data_offsets [{begin}, {end}]", span)
        pos = end
    if pos != buffer_len:
        raise _bad(p, f"{buffer_len - pos} bytes after the last tensor are not covered by "
                      f"the header", span)
    return meta, entries


def load_checkpoint(path: str | os.PathLike, span: Span | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and verify a dp checkpoint; returns (tensors, metadata). The metadata includes
    `format` and `sha256`. Anything else than an intact dp checkpoint is a DpError."""
    import safetensors.numpy

    p = os.fspath(path)
    if not os.path.exists(p):
        raise DpError("checkpoint", f"checkpoint file '{p}' does not exist", span,
                      ("run `dp train` first to create it",))
    if os.path.isdir(p):
        raise DpError("checkpoint", f"checkpoint '{p}' is a directory, expected a file", span)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise _bad(p, f"it is only {len(head)} bytes long (a safetensors file starts "
                              f"with an 8-byte header length)", span)
            sniffed = _sniff(head)
            if sniffed:
                raise _bad(p, sniffed, span)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise _bad(p, f"the header length {n} is larger than the 100 MB limit", span)
            if n > size - 8:
                raise _bad(p, f"the header length {n} is larger than the rest of the file "
                              f"({size - 8} bytes; truncated or not safetensors)", span)
            header = f.read(n)
            buffer_len = size - 8 - n
            meta, entries = _parse_header(p, header, buffer_len, span)
            f.seek(0)
            data = f.read()
    except OSError as e:
        raise DpError("checkpoint", f"checkpoint '{p}' cannot be read ({e.strerror or e})",
                      span) from None
    if len(data) != size:
        raise DpError("checkpoint", f"checkpoint '{p}' changed while it was being read", span)

    if "format" not in meta:
        raise DpError("checkpoint", f"'{p}' is a safetensors file but not a dp checkpoint: "
                                    f"its metadata has no 'format' entry (expected {FORMAT})",
                      span)
    if meta["format"] != FORMAT:
        raise DpError("checkpoint", f"checkpoint '{p}' has format {meta['format']!r}; this dp "
                                    f"reads {FORMAT!r}", span)
    if "sha256" not in meta:
        raise DpError("checkpoint", f"checkpoint '{p}' has no sha256 in its metadata, so its "
                                    f"data cannot be verified", span)
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as e:          # noqa: BLE001 -- validated above; belt and braces
        raise _bad(p, f"safetensors refused it ({str(e)[:200]})", span) from None
    if set(tensors) != set(entries):
        raise _bad(p, "safetensors read different tensors than the header lists", span)
    for name, a in tensors.items():
        dt, shape, _, _ = entries[name]
        if a.dtype != _ST_TO_NP[dt] or list(a.shape) != shape:
            raise _bad(p, f"tensor '{name}' was read as {a.dtype} {list(a.shape)}, the header "
                          f"says {dt} {_shape_str(shape)}", span)
    if tensor_digest(tensors) != meta["sha256"]:
        raise DpError("checkpoint", f"checkpoint data is corrupt (checksum mismatch) in '{p}'",
                      span, (f"the previous checkpoint may be intact: {previous_path(p)}",))
    for name in sorted(tensors):
        a = tensors[name]
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            first = np.unravel_index(int(np.argmin(np.isfinite(a).reshape(-1))), a.shape)
            raise DpError("checkpoint", f"checkpoint '{p}': parameter '{name}' has a "
                                        f"non-finite value ({a[first]}) at index "
                                        f"{list(map(int, first))}; expected finite numbers",
                          span)
    return tensors, dict(meta)


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
                            f"shape {_shape_str(want)})")
            continue
        got = tuple(int(d) for d in np.shape(tensors[name]))
        if got != want:
            problems.append(f"parameter '{name}' has the wrong shape in checkpoint '{p}': the "
                            f"program expects {_shape_str(want)}, the checkpoint has "
                            f"{_shape_str(got)}")
    for name in tensors:
        if name not in expected:
            got = tuple(np.shape(tensors[name]))
            problems.append(f"checkpoint '{p}' has a parameter '{name}' (shape "
                            f"{_shape_str(got)}) that the program does not declare")
    if problems:
        notes = tuple(problems[1:11])
        if len(problems) > 11:
            notes += (f"... and {len(problems) - 11} more mismatches",)
        raise DpError("checkpoint", problems[0], span, notes)
