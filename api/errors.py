"""`dp.Error`: every mistake the Python API reports, rendered exactly as the command line
prints it, with its kind and place as attributes."""

from __future__ import annotations

import contextlib
import functools

from dp.dsl.errors import DpError, DpErrors, format_error


class Error(DpError):
    """A dp error: `str(err)` is what `dp` prints (`error[kind]: message`, the place, the
    source line, notes); `kind`, `message`, `notes`, `file`, `line` and `col` say the same
    in parts (`file`, `line` and `col` are None when the error has no place in a source)."""

    def __init__(self, err: DpError, sources: dict[str, str] | None = None):
        super().__init__(err.kind, err.message, err.span, err.notes)
        self.exit_code = err.exit_code
        self.errors = list(err.errors) if isinstance(err, DpErrors) else [err]
        self._sources = sources

    @property
    def file(self) -> str | None:
        return self.span.file if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def col(self) -> int | None:
        return self.span.col if self.span else None

    def __str__(self) -> str:
        return "\n".join(format_error(e, self._sources) for e in self.errors)


@contextlib.contextmanager
def reported(sources: dict[str, str] | None = None):
    """Turn a DpError raised inside into an Error (`sources`: text of files not on disk)."""
    try:
        yield
    except Error:
        raise
    except DpError as err:
        raise Error(err, sources) from None


def api(method):
    """A method of the API: a DpError raised inside reaches the caller as an Error. (A plain
    try, not `reported`: a generator context costs a microsecond a call, a fifth of a small
    network's whole forward pass.)"""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Error:
            raise
        except DpError as err:
            raise Error(err, getattr(self, "_sources", None)) from None
    return wrapper


def usage(message: str, *notes: str) -> Error:
    """A mistake in a call of the API itself (a wrong argument), not in a program."""
    return Error(DpError("usage", message, None, notes))
