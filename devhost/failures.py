"""How the host logs a function that failed: one line per failure, the traceback once per error.

A poll against a service that is down fails on every tick (every 5 s in `devhost run`);
a full traceback each time buries everything else. So each failure is one ERROR line
naming the function, the error's type and code and its first line; the traceback comes
with the first failure of a function and whenever its error changes (type or code, or
the message for errors without a code), and at DEBUG level for every repeat. A success
resets it, so the next failure shows its traceback again.
"""

from __future__ import annotations

import logging
import threading


def describe(exc: BaseException) -> str:
    """`Type [code]: first line of the message` (the message cut at 300 characters)."""
    code = getattr(exc, "code", None)
    lines = str(exc).splitlines()
    text = lines[0][:300] if lines else ""
    head = type(exc).__name__ + (f" [{code}]" if code else "")
    return f"{head}: {text}" if text else head


def _signature(exc: BaseException) -> str:
    """What makes two failures "the same error": a request id or a count in the message must not."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}|{code}" if code else describe(exc)


class FailureLog:
    """Per-function memory of the last error, shared by every invocation in one process."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def failed(self, name: str, exc: BaseException) -> None:
        signature = _signature(exc)
        with self._lock:
            repeat = self._last.get(name) == signature
            self._last[name] = signature
        if repeat:
            self._logger.error("function %s failed again: %s (same error; traceback at DEBUG)", name, describe(exc))
            self._logger.debug("function %s traceback", name, exc_info=exc)
        else:
            self._logger.error("function %s failed: %s", name, describe(exc), exc_info=exc)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._last.pop(name, None)
