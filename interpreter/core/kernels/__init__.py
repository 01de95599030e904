"""Numba kernels (stage: run time): plain loops over concrete, batched ndarrays.

Importing this package first makes sure Numba's on-disk cache has somewhere writable to go
(tests/test_numba_env.py): when `NUMBA_CACHE_DIR` is unset, it is set to a per-user directory,
`$XDG_CACHE_HOME/dp/numba` or `~/.cache/dp/numba`, else `<tempdir>/dp-numba-<uid>`. Without
this, `@njit(cache=True)` next to a read-only package (or with `HOME=/nonexistent`) fails with
"cannot cache function". This must run before Numba reads its configuration, so the kernel
modules import Numba only after this file has run (a submodule import always runs it first).

Kernel rules: `@njit(cache=True, error_model="numpy")`, `fastmath` off or only flags that keep
NaN and inf (`contract`, `reassoc`), dtype-generic (float32 at run time, float64 in the
gradient checks), accumulation in float64 (BLAS-like products may sum in their dtype, as BLAS
does), no error paths (the wrappers in `primitives/` check what a user can get wrong), and a
NumPy reference for every kernel (`tests/test_kernels.py` and its neighbours).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import warnings

from dp.dsl.cache import candidates, usable


def ensure_cache_dir() -> str:
    """Set `NUMBA_CACHE_DIR` (if unset) to a writable per-user directory and return it."""
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current:
        return current
    for path in candidates("numba"):
        if usable(path):
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


def __getattr__(name: str):
    """`from ..kernels import conv as K` binds a module that loads, and Numba with it, when
    one of its kernels is first used: lowering needs only the primitives' shape rules, so
    `dp check` never loads Numba. (`from ..kernels.conv import f` would load it at once.)"""
    fullname = f"{__name__}.{name}"
    if fullname not in sys.modules:
        spec = None if name.startswith("__") else importlib.util.find_spec(fullname)
        if spec is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        spec.loader.exec_module(module)
    return sys.modules[fullname]


def load_now() -> None:
    """Finish loading every kernel module bound lazily so far. The executor calls it when it
    is imported, so that the loading happens there, in one thread: LazyLoader is not
    thread-safe before Python 3.12.3, and a model's first call may come from several."""
    for fullname, module in list(sys.modules.items()):
        if fullname.startswith(__name__ + "."):
            getattr(module, "__doc__", None)  # any attribute of a lazy module loads it
