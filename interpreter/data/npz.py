"""Users' `.npz` archives. Arrays are never unpickled: they are read with
`allow_pickle=False`, so object arrays are refused, and each member's header is read first so
that a tiny file cannot make numpy allocate terabytes."""

from __future__ import annotations

import math
import os

import numpy as np
from dp.dsl.errors import DpError, Span

from .data_checks import check_file, data_error, make_dataset
from .dataset import Dataset

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


_OBJECT_MSG = ("array '{key}' in '{path}' has an object dtype, which dp refuses to load: "
               "reading it would need pickle, which can run arbitrary code; expected a "
               "numeric array")


def _npz_precheck(z, key: str, path: str, span: Span | None) -> None:
    """Read the member's .npy header first: refuse object dtypes, and shapes that need more
    bytes than the member holds (a tiny file must not make numpy allocate terabytes)."""
    fmt = np.lib.format
    names = z.zip.namelist()
    name = key + ".npy" if key + ".npy" in names else key
    info = z.zip.getinfo(name)
    with z.zip.open(name) as m:
        try:
            version = fmt.read_magic(m)
        except ValueError:
            return                      # not a .npy member: reported after loading
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(m, max_header_size=100_000)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(m, max_header_size=100_000)
        else:
            return                      # numpy checks the rest itself
        header_len = m.tell()
    if dtype.hasobject:
        raise data_error(_OBJECT_MSG.format(key=key, path=path), span)
    need = dtype.itemsize * math.prod(shape)
    have = info.file_size - header_len
    if need != have:
        raise data_error(f"array '{key}' in '{path}' is corrupt: its header says shape "
                    f"{list(shape)} of {dtype} ({need} bytes), but the archive holds {have} "
                    f"bytes of data", span)


def _npz_array(z, key: str, path: str, span: Span | None) -> np.ndarray:
    try:
        _npz_precheck(z, key, path, span)
        a = z[key]
    except DpError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise data_error(_OBJECT_MSG.format(key=key, path=path), span) from None
        raise data_error(f"array '{key}' in '{path}' is corrupt or not a numpy array ({e})",
                    span) from None
    except Exception as e:              # noqa: BLE001 -- zlib.error, BadZipFile, EOFError...
        raise data_error(f"array '{key}' in '{path}' is corrupt ({type(e).__name__}: {e}); "
                    f"expected a numpy array", span) from None
    if not isinstance(a, np.ndarray):
        raise data_error(f"member '{key}' of '{path}' is not a numpy array (.npy); expected an "
                    f"archive written by numpy.savez", span)
    return a


def load_npz(path: str | os.PathLike, x: str = "x", y: str | None = "y",
             span: Span | None = None) -> Dataset:
    """Arrays `x` (features, any numeric dtype -> float32) and `y` (labels: integers -> int64,
    floats -> float32; `y=None` for none) from a `.npz` archive written by `np.savez`."""
    p = os.fspath(path)
    for what, key in (("x", x), ("y", y)):
        if not isinstance(key, str) and not (what == "y" and key is None):
            raise data_error(f"the array name for {what} in '{p}' must be a string, got {key!r}",
                        span)
    check_file(p, "data file", span)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise data_error(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
    with f:
        try:
            head = f.read(6)
            f.seek(0)
        except OSError as e:
            raise data_error(f"data file '{p}' cannot be read ({e.strerror or e})", span) from None
        if head[:4] not in _ZIP_MAGICS:
            found = ("an empty file" if not head else
                     "a single .npy array" if head.startswith(b"\x93NUMPY") else
                     "a Python pickle" if head[:1] == b"\x80" else "something else")
            raise data_error(f"data file '{p}' is not an .npz archive: expected a zip of numpy "
                        f"arrays (as written by numpy.savez), found {found}", span)
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:          # noqa: BLE001 -- BadZipFile, zlib.error, EOFError...
            raise data_error(f"data file '{p}' is not a readable .npz archive (corrupt zip: {e})",
                        span) from None
        with z:
            keys = list(z.files)
            shown = ", ".join(repr(k) for k in keys) if keys else "no arrays at all"
            for key in (x, y):
                if key is not None and key not in keys:
                    raise data_error(f"data file '{p}' has no array named '{key}'; found: {shown}",
                                span)
            xa = _npz_array(z, x, p, span)
            ya = _npz_array(z, y, p, span) if y is not None else None
    return make_dataset(xa, ya, f"array '{x}'", f"array '{y}'", p, span)
