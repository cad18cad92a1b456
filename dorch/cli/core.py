"""Core commands: submit, worker, up, status, result, cancel, queue, stop, config, demo."""

from __future__ import annotations

from dorch.cli import app  # noqa: F401
