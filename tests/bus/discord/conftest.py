"""Fixtures for the Discord bus tests: ``make_world(emulator_config=None, **configure)`` and
``world``, a ``tests.support.world.World`` (the emulator serving from a thread and a dorch home
configured for it), torn down with every fleet it started. Only fixtures here: the helpers are
imported from tests/support/world.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dorch_emulator import Emulator, EmulatorConfig

from tests.support.helpers import DorchHome
from tests.support.world import World, world_config


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []
    stack: list[Any] = []

    def make(emulator: EmulatorConfig | None = None, **configure: Any) -> World:
        ctx = Emulator.running(emulator or world_config())
        emu = ctx.__enter__()
        stack.append(ctx)
        root = tmp_path / f"world-{len(worlds)}"
        root.mkdir()
        world = World(emu, DorchHome(root), root)
        world.configure(**configure)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for fleet in world.fleets:
            fleet.stop()
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
