"""Shared fixtures: a dorch home, and the Discord emulator in process or as a process
(tests/support/emulator.py). Helpers live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import emulator, emulator_proc, make_emulator, make_emulator_proc  # noqa: F401
from tests.support.helpers import DorchHome


@pytest.fixture
def home(tmp_path: Path) -> Iterator[DorchHome]:
    h = DorchHome(tmp_path)
    h.configure()
    yield h
