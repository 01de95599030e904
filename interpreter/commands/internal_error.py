"""The message for a bug in dp (an exception that is not a DpError), shared by the CLI and the
REPL: the user sees one line and where the traceback went, never the traceback itself."""

from __future__ import annotations

import os
import tempfile
import traceback


def internal_error(exc: Exception) -> str:
    """The message for a bug in dp; its traceback goes to a log file of its own (a new one for
    each error, readable by this user only: others on the machine neither see nor overwrite
    it), not to the user's screen."""
    try:
        fd, log = tempfile.mkstemp(prefix="dp-internal-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            traceback.print_exc(file=f)
    except OSError:
        log = "nowhere (the temporary folder cannot be written)"
    return (f"error[internal]: {type(exc).__name__}: {exc}\n   = note: this is a bug in dp; "
            f"the traceback is in {log}")
