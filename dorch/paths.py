"""Where dorch keeps things: config, data (the local queue), per-worker state and workspaces.

A service run by systemd (``$INVOCATION_ID`` set) uses /var/lib/dorch; an interactive user gets
the platform's user directories. ``$DORCH_DATA_DIR`` and ``$DORCH_CONFIG_DIR`` override both.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_DATA_DIR = Path("/var/lib/dorch")


def config_dir() -> Path:
    env = os.environ.get("DORCH_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_path

    return user_config_path("dorch")


def data_dir() -> Path:
    env = os.environ.get("DORCH_DATA_DIR")
    if env:
        return Path(env)
    if os.environ.get("INVOCATION_ID"):
        return SERVICE_DATA_DIR
    from platformdirs import user_data_path

    return user_data_path("dorch")


def worker_state_dir(worker_id: str) -> Path:
    """Per-worker state: systemd's ``$STATE_DIRECTORY`` for a unit, else under the data dir.

    The unit lists ``StateDirectory=dorch/workers/%i dorch`` (the shared queue and this
    instance's state); systemd sorts parents first in the variable, so take the deepest entry.
    """
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return max((Path(p) for p in env.split(":") if p), key=lambda p: len(p.parts))
    return data_dir() / "workers" / worker_id
