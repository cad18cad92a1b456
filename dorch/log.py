"""Logging: one line per event on stderr (journald-friendly), and secrets never printed.

Any value passed to ``register_secret`` is replaced by ``[redacted]`` in every log line, wherever
it appears (message, arguments or exception text): see ``dorch.redact``.
"""

from __future__ import annotations

import logging
import os
import sys

from dorch.redact import redact
from dorch.redact import register as register_secret

__all__ = ["redact", "register_secret", "setup"]


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "info", name: str = "") -> None:
    """Configure the root logger once. Under systemd (JOURNAL_STREAM) omit the timestamp."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    prefix = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    who = f"{name} " if name else ""
    handler.setFormatter(_RedactingFormatter(f"{prefix}%(levelname)s {who}%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())


class _LastResort(logging.Handler):
    """What logging prints when nothing called ``setup`` (most commands): warnings and errors,
    as the standard library's last resort does, but redacted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


logging.lastResort = _LastResort(logging.WARNING)
logging.lastResort.setFormatter(_RedactingFormatter("%(message)s"))
