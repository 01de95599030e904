"""NumPy's floating-point warnings off inside dp's passes, at the cost of one context variable.

A non-finite value is the caller's to see (training names where it was made: nonfinite.py),
never a RuntimeWarning on stderr. `np.errstate` does this but builds its state on every entry
(about 0.9 us, a fifth of a batch-1 inference), so the state is built once and set in NumPy's
context variable, as errstate itself does; where NumPy keeps it elsewhere, errstate is used.
Per thread and nestable, like errstate."""

from __future__ import annotations

import numpy as np

try:  # NumPy 2: errstate sets this context variable to an object made by _make_extobj
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE = _make_extobj(all="ignore")

    def enter():
        return _extobj_contextvar.set(_IGNORE)

    def leave(token) -> None:
        _extobj_contextvar.reset(token)
except (ImportError, TypeError):  # pragma: no cover - other NumPy releases
    def enter():
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def leave(token) -> None:
        token.__exit__(None, None, None)
