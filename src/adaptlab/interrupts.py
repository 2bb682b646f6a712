"""SIGINT and SIGTERM end a command the same way, and the user learns what was kept.

While :func:`handled_signals` is active both signals raise :class:`KeyboardInterrupt` in the main
thread, so every ``except BaseException`` / ``finally`` clean-up (temporary directories, run
directories that hold nothing yet, files written to a temporary name) runs for a ``kill`` exactly as
for Ctrl-C. The CLI then exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM) and prints
the notes that the interrupted work left with :func:`note`: what stayed on disk and how to go on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_notes: list[str] = []


def _raise_interrupt(signum: int, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def handled_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`KeyboardInterrupt` for the block; earlier notes are forgotten.

    Outside the main thread (where Python cannot install handlers) signals keep their handlers.
    """
    _received.clear()
    _notes.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def note(text: str) -> None:
    """Say what an interruption from here on leaves behind (printed only if one happens)."""
    _notes.append(text)


def notes() -> list[str]:
    return list(_notes)


def received_signal() -> signal.Signals:
    """The signal that ended the command (SIGINT when the interrupt did not come from a signal)."""
    return signal.Signals(_received[-1]) if _received else signal.SIGINT


def exit_code() -> int:
    """``128 + signal number``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + received_signal().value
