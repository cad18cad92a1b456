"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DorchHome


@pytest.fixture
def home(tmp_path: Path) -> Iterator[DorchHome]:
    h = DorchHome(tmp_path)
    h.configure()
    yield h
