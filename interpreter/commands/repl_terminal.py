"""`dp repl` at a terminal or on a pipe: prompt_toolkit's line editing, completion and
history when both ends are a terminal, plain lines otherwise. The session itself is
`repl.Session`."""

from __future__ import annotations

import os
import re
import sys

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from .colour import repl_lexer, wants_colour
from .repl import COMMANDS, MORE, PROMPT, Session


class _Names(Completer):
    """Tab completes the names a session knows, :commands at the start of a line, and the
    programs and folders after `:load `."""

    def __init__(self, session: Session):
        self.session = session
        self.paths = PathCompleter(expanduser=True, file_filter=lambda p: (
            os.path.isdir(p) or p.endswith(".dp")))

    def get_completions(self, document, complete_event):
        load = re.match(r"\s*:load\s+(\S*)$", document.text_before_cursor)
        if load is not None:
            yield from self.paths.get_completions(Document(load.group(1)), complete_event)
            return
        m = re.search(r"^\s*:\w*$|[A-Za-z_]\w*$", document.text_before_cursor)
        if m is None:
            return
        word = m.group().strip()
        names = [":" + c for c in COMMANDS] if word.startswith(":") else self.session.names()
        for name in names:
            if name.startswith(word) and name != word:
                yield Completion(name, start_position=-len(word))


def _history():
    """$XDG_STATE_HOME/dp/repl_history (~/.local/state by default), else none kept."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    path = os.path.join(state, "dp", "repl_history")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
        return FileHistory(path)
    except OSError:
        return InMemoryHistory()


def _terminal_reader(session: Session):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.lexers import PygmentsLexer
    from prompt_toolkit.shortcuts import CompleteStyle

    # the line being typed, coloured as dp (not with NO_COLOR)
    lexer = PygmentsLexer(repl_lexer()) if wants_colour(sys.stdout) else None
    prompt = PromptSession(history=_history(), completer=_Names(session),
                           complete_while_typing=False,
                           complete_style=CompleteStyle.READLINE_LIKE, lexer=lexer)
    return prompt.prompt


def _plain_reader(prompt: str) -> str:
    """Lines from a pipe or a file: no prompts, no terminal codes (typed lines whose answers
    go to a pipe get plain prompts on stderr)."""
    if sys.stdin.isatty():
        print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def repl_main(files: list[str]) -> int:
    """0 when the session ends (:quit, Ctrl-D, end of input); 1 when input that did not come
    from a terminal had an error, so a script of REPL lines can be checked."""
    session = Session()
    for path in files:
        session.guard(session.load, path)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    read = _terminal_reader(session) if interactive else _plain_reader
    if interactive:
        session.say("dp repl: the standard library is loaded. :help shows what to type; "
                    ":quit or Ctrl-D leaves.")
    while True:
        try:
            text = read(MORE if session.pending else PROMPT)
        except EOFError:
            break
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line and what is pending
            session.pending = []
            continue
        if not session.feed(text):
            break
    if session.pending:
        session.finish()
    return 1 if session.failed and not interactive else 0
