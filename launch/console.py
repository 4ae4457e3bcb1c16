"""The run's own output: one line per event, prefixed with the command that runs it (``[run_all] Khazad is up
...``, ``[khazad run] ...``); operators and the tests read these lines."""

from __future__ import annotations

_prog = ["run_all"]


def set_prog(name: str) -> None:
    """Name the command in the prefix (``run_all`` for ``python run_all.py``, ``khazad run`` for the CLI)."""
    _prog[0] = name


def prog() -> str:
    """``run_all.py`` or ``khazad run``: for messages that name the command."""
    return "run_all.py" if _prog[0] == "run_all" else _prog[0]


def say(message: str) -> None:
    print(f"[{_prog[0]}] {message}", flush=True)
