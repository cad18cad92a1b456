"""Fixtures for everything Discord: the emulator in-process (a thread) or as a child process.

- ``emulator``: the default world (guild "dorch", #task-queue/#results/#worker-pool, bots
  worker-1..worker-4 and submitter, users alice (role dorch-submitter) and bob), served from a
  thread; an ``Emulator`` whose methods are safe to call from the test.
- ``make_emulator(config=None, **overrides)``: the same for a config of your own (an
  ``EmulatorConfig`` or a dict for ``EmulatorConfig.from_dict``; keyword overrides are merged
  over the default dict at the top level, e.g. ``ratelimit={...}``).
- ``emulator_proc`` / ``make_emulator_proc(config=None)``: ``python -m dorch_emulator``
  on a free port; yields an ``EmulatorProcess`` (``.url``, ``.api_base``, ``.remote``).
Names to ids and tokens: ``emu.config.bot("worker-1").token``, ``emu.config.channel("results").id``
(or ``emu.state()`` / ``RemoteEmulator.state()``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from dorch_emulator import Emulator, EmulatorConfig
from dorch_emulator.config import DEFAULT
from dorch_emulator.remote import EmulatorProcess

from tests.support.emulator_api import MakeEmulator, MakeEmulatorProc


def emulator_config(config: EmulatorConfig | dict[str, Any] | None = None,
                    **overrides: Any) -> EmulatorConfig:
    """An ``EmulatorConfig`` from CONFIG (default: the built-in world) with OVERRIDES on top."""
    if isinstance(config, EmulatorConfig):
        return config
    data = copy.deepcopy(DEFAULT if config is None else config)
    data.update(overrides)
    return EmulatorConfig.from_dict(data)


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    with ExitStack() as stack:
        def make(config: EmulatorConfig | dict[str, Any] | None = None, **overrides: Any) -> Emulator:
            return stack.enter_context(Emulator.running(emulator_config(config, **overrides)))

        yield make


@pytest.fixture
def emulator(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator()


@pytest.fixture
def make_emulator_proc(tmp_path: Path) -> Iterator[MakeEmulatorProc]:
    with ExitStack() as stack:
        def make(config: dict[str, Any] | str | Path | None = None, **overrides: Any) -> EmulatorProcess:
            if isinstance(config, str | Path):
                path = Path(config)
            else:
                data = copy.deepcopy(DEFAULT if config is None else config)
                data.update(overrides)
                path = tmp_path / f"emulator-{len(list(tmp_path.glob('emulator-*.json')))}.json"
                path.write_text(json.dumps(data))
            stderr = stack.enter_context((tmp_path / f"{path.stem}.stderr").open("w"))
            return stack.enter_context(EmulatorProcess(str(path), stderr=stderr))

        yield make


@pytest.fixture
def emulator_proc(make_emulator_proc: MakeEmulatorProc) -> EmulatorProcess:
    return make_emulator_proc()
