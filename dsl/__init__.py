"""The front end of dp: parse and check (stages 1-2). Imports nothing from the interpreter."""

from .checker import check
from .errors import DpError, DpErrors, Span, format_error
from .loader import load, load_text
from .parser import parse

__all__ = ["check", "load", "load_text", "parse", "DpError", "DpErrors", "Span", "format_error"]
