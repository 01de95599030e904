"""The header of a safetensors file, validated field by field before any byte of it reaches
safetensors: JSON with no duplicate keys, known dtypes, shapes and offsets that fit the file.
A file that is not one (a pickle, a zip, an .npy) is named for what it looks like."""

from __future__ import annotations

import json

import numpy as np
from dp.dsl.errors import DpError, Span

MAX_NDIM = 64

# safetensors dtype names <-> numpy dtypes (only those numpy represents exactly)
ST_TO_NP = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
NP_TO_ST = {(dt.kind, dt.itemsize): name for name, dt in ST_TO_NP.items()}


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def bad_file(p: str, what: str, span: Span | None, notes: tuple[str, ...] = ()) -> DpError:
    return DpError("checkpoint", f"'{p}' is not a dp checkpoint (safetensors) file: {what}",
                   span, notes)


def sniff(head: bytes) -> str | None:
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


def parse_header(p: str, header: bytes, buffer_len: int, span: Span | None):
    """Validate the JSON header; returns (metadata, {name: (dtype, shape, begin, end)})."""
    if not header.startswith(b"{"):
        raise bad_file(p, f"the header does not start with '{{' (found {header[:8]!r})", span)
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_file(p, f"the header is not UTF-8 (byte {e.start})", span) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as d:
        raise bad_file(p, f"the header has the key {d.key!r} twice", span) from None
    except (ValueError, RecursionError) as e:
        raise bad_file(p, f"the header is not valid JSON ({str(e)[:120]})", span) from None
    if not isinstance(obj, dict):
        raise bad_file(p, f"the header is JSON {type(obj).__name__}, expected an object", span)

    meta = obj.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise bad_file(p, "__metadata__ must map strings to strings", span)

    entries = {}
    for name, info in obj.items():
        where = f"tensor '{name}'"
        if not isinstance(info, dict):
            raise bad_file(p, f"{where}: expected an object with dtype, shape and data_offsets, "
                          f"found {type(info).__name__}", span)
        keys = set(info)
        if keys != {"dtype", "shape", "data_offsets"}:
            missing = sorted({"dtype", "shape", "data_offsets"} - keys)
            extra = sorted(keys - {"dtype", "shape", "data_offsets"})
            raise bad_file(p, f"{where}: expected the fields dtype, shape, data_offsets"
                          + (f"; missing {', '.join(missing)}" if missing else "")
                          + (f"; unknown {', '.join(map(str, extra))}" if extra else ""), span)
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dt, str) or dt not in ST_TO_NP:
            raise bad_file(p, f"{where}: unknown or unsupported dtype {dt!r} (expected one of "
                          f"{', '.join(ST_TO_NP)})", span)
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise bad_file(p, f"{where}: shape must be a list of integers, found {shape!r:.80}",
                       span)
        if len(shape) > MAX_NDIM:
            raise bad_file(p, f"{where}: {len(shape)} dimensions, at most {MAX_NDIM} allowed", span)
        if any(d < 0 for d in shape):
            raise bad_file(p, f"{where}: negative dimension in shape {shape_str(shape)}", span)
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)):
            raise bad_file(p, f"{where}: data_offsets must be two integers [begin, end], found "
                          f"{offs!r:.80}", span)
        begin, end = offs
        if not 0 <= begin <= end:
            raise bad_file(p, f"{where}: data_offsets [{begin}, {end}] are not 0 <= begin <= end",
                       span)
        if end > buffer_len:
            raise bad_file(p, f"{where}: data_offsets [{begin}, {end}] run past the end of the "
                          f"data ({buffer_len} bytes; the file is truncated or corrupt)", span)
        itemsize = ST_TO_NP[dt].itemsize
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
                raise bad_file(p, f"{where}: dtype {dt} and shape {shape_str(shape)} need "
                              f"{need}, but data_offsets [{begin}, {end}] span {end - begin} "
                              f"and the whole data section is {buffer_len} bytes", span)
            raise bad_file(p, f"{where}: dtype {dt} and shape {shape_str(shape)} need "
                          f"{count * itemsize} bytes, but data_offsets [{begin}, {end}] span "
                          f"{end - begin}", span)
        entries[name] = (dt, shape, begin, end)

    pos = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < pos:
            raise bad_file(p, f"tensor '{name}': data_offsets [{begin}, {end}] overlap the "
                          f"previous tensor (which ends at {pos})", span)
        if begin > pos:
            raise bad_file(p, f"tensor '{name}': a gap of {begin - pos} bytes before its "
                          f"data_offsets [{begin}, {end}]", span)
        pos = end
    if pos != buffer_len:
        raise bad_file(p, f"{buffer_len - pos} bytes after the last tensor are not covered by "
                      f"the header", span)
    return meta, entries
