"""What the front end rebuilds at every start unless it is kept: the parser's tables and the
parsed standard library, as JSON files in a private per-user cache directory.

The directory is the first of `$XDG_CACHE_HOME/dp/front`, `~/.cache/dp/front` and
`<tempdir>/dp-front-<uid>` that is, or can be made, this user's and writable by no one else;
the Numba kernels' cache is chosen the same way. With none, nothing is kept. A file holds its
key and its value: a file with another key, unreadable or damaged is rebuilt and replaced,
never an error. Files are replaced whole (written aside, then renamed), so a reader never sees
half of one. The values are data only: lists, tuples, dicts, numbers, strings and the
dataclasses a caller names (the AST's), so reading a file runs no code from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

V = TypeVar("V")
FOLDER = "front"  # the name of this cache's directory: `~/.cache/dp/front`


def usable(path: str) -> bool:
    """True if `path` is (or can be made) a directory of this user's that only it can write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    if st.st_mode & 0o022:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def candidates(name: str) -> list[str]:
    """Where a cache called `name` may go, in order of preference."""
    out = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        out.append(os.path.join(xdg, "dp", name))
    home = os.path.expanduser("~")
    if home and home != "~" and os.path.isabs(home):
        out.append(os.path.join(home, ".cache", "dp", name))
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    out.append(os.path.join(tempfile.gettempdir(), f"dp-{name}-{uid}"))
    return out


def cache_dir(name: str = FOLDER) -> str | None:
    """The directory for the cache `name`, or None when no candidate will do."""
    return next((path for path in candidates(name) if usable(path)), None)


@lru_cache(maxsize=1)
def front_end_key() -> str:
    """What a parse depends on besides its text: the front end's code and grammar, lark's
    version and Python's. Any edit of dsl/ makes the kept files stale."""
    import lark

    h = hashlib.sha256(f"{lark.__version__} {sys.version_info[:3]}".encode())
    folder = Path(__file__).parent
    for path in sorted([*folder.glob("*.py"), *folder.glob("*.lark")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") + b"\0")
    return h.hexdigest()


def cached(name: str, key: str, build: Callable[[], V], classes: tuple[type, ...] = ()) -> V:
    """The value kept as `name` under `key`, or `build()`'s, which is then kept. `classes`:
    the dataclasses the value may hold. Each installation of dp (each checkout) has its own
    file, so that two do not keep replacing each other's."""
    folder = cache_dir()
    place = digest(str(Path(__file__).resolve().parent))[:12]
    path = os.path.join(folder, f"{name}-{place}.json") if folder else None
    named = {c.__name__: c for c in classes}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                kept_key, value = json.load(f, object_hook=lambda d: _decode(d, named))
            if kept_key == key:
                return value
        except Exception:  # missing, unreadable, cut short, another format: rebuild it
            pass
    value = build()
    if path is not None:
        _write(path, key, value, named)
    return value


def _encode(x, named: dict[str, type]):
    """`x` as JSON: a tuple, a dict (any keys) and a dataclass become tagged objects."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_encode(v, named) for v in x]
    if isinstance(x, tuple):
        return {"t": [_encode(v, named) for v in x]}
    if isinstance(x, dict):
        return {"d": [[_encode(k, named), _encode(v, named)] for k, v in x.items()]}
    if named.get(type(x).__name__) is type(x):
        return {"c": type(x).__name__,
                "f": [_encode(getattr(x, f.name), named) for f in dataclasses.fields(x)]}
    raise TypeError(f"the cache keeps no {type(x).__name__}")


def _decode(d: dict, named: dict[str, type]):
    if "t" in d:
        return tuple(d["t"])
    if "d" in d:
        return {k: v for k, v in d["d"]}
    return named[d["c"]](*d["f"])


def _write(path: str, key: str, value, named: dict[str, type]) -> None:
    """Replace the file whole; a cache that cannot be written is only slower."""
    try:
        text = json.dumps([key, _encode(value, named)], separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    except (OSError, TypeError, ValueError, RecursionError):
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:  # a full disk, say
        try:
            os.unlink(tmp)
        except OSError:
            pass
