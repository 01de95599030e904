"""Numba kernels (stage: run time): plain loops over concrete, batched ndarrays.

Importing this package first makes sure Numba's on-disk cache has somewhere writable to go
(tests/test_numba_env.py): when `NUMBA_CACHE_DIR` is unset, it is set to a per-user directory,
`$XDG_CACHE_HOME/dp/numba` or `~/.cache/dp/numba`, else `<tempdir>/dp-numba-<uid>`. Without
this, `@njit(cache=True)` next to a read-only package (or with `HOME=/nonexistent`) fails with
"cannot cache function". This must run before Numba reads its configuration, so the kernel
modules import Numba only after this file has run (a submodule import always runs it first).

Kernel rules: `@njit(cache=True, error_model="numpy")`,
no `fastmath` (NaN and inf must propagate), dtype-generic (float32 at run time, float64 in the
gradient checks), accumulation in float64, no error paths (the wrappers in `primitives/` check
what a user can get wrong), and a NumPy reference for every kernel in `tests/test_kernels.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings


def _usable(path: str) -> bool:
    """True if `path` is (or can be made) a private directory we own and can write to.

    The cache holds pickled index files, so a directory another user could write to would let
    them run code in our process: we refuse it rather than trust it.
    """
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


def _candidates() -> list[str]:
    out = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        out.append(os.path.join(xdg, "dp", "numba"))
    home = os.path.expanduser("~")
    if home and home != "~" and os.path.isabs(home):
        out.append(os.path.join(home, ".cache", "dp", "numba"))
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    out.append(os.path.join(tempfile.gettempdir(), f"dp-numba-{uid}"))
    return out


def ensure_cache_dir() -> str:
    """Set `NUMBA_CACHE_DIR` (if unset) to a writable per-user directory and return it."""
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current:
        return current
    for path in _candidates():
        if _usable(path):
            break
    else:
        path = tempfile.mkdtemp(prefix="dp-numba-")
        warnings.warn(f"dp: no persistent Numba cache directory; caching in {path}", stacklevel=2)
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None and not getattr(config, "CACHE_DIR", ""):
        # Numba was imported before us and read an empty setting; its compiler re-reads the
        # environment, but the cache locator is chosen at decoration time, so set it now too.
        config.CACHE_DIR = path
    return path


CACHE_DIR = ensure_cache_dir()
