"""The message for a bug in dp (an exception that is not a DpError), shared by the CLI and the
REPL: the user sees one line and where the traceback went, never the traceback itself."""

from __future__ import annotations

import os
import tempfile
import traceback


def internal_error(exc: Exception) -> str:
    """The message for a bug in dp; its traceback goes to a log file, not to the user."""
    log = os.path.join(tempfile.gettempdir(), "dp-internal-error.log")
    try:
        with open(log, "w", encoding="utf-8") as f:
            traceback.print_exc(file=f)
    except OSError:
        pass
    return (f"error[internal]: {type(exc).__name__}: {exc}\n   = note: this is a bug in dp; "
            f"the traceback is in {log}")
