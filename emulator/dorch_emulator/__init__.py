"""A Discord REST API emulator for dorch's endpoints: tests, benchmarks and demos run offline.

``Emulator`` serves it (``async with`` or ``Emulator.running`` from a thread); ``EmulatorConfig``
describes the guild, channels, bots, users and limits; ``RemoteEmulator`` drives one running in
another process through its control API. ``python -m dorch_emulator --config FILE``
and ``dorch emulator`` run it as a process.
"""

from dorch_emulator.config import EmulatorConfig, EmulatorConfigError, RouteLimit
from dorch_emulator.faults import Faults
from dorch_emulator.remote import RemoteEmulator
from dorch_emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "EmulatorConfigError", "Faults", "RemoteEmulator", "RouteLimit"]
