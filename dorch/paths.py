"""Where dorch keeps things: config, the local queue, private state and per-worker state.

A service run by systemd (``$INVOCATION_ID`` set) uses /var/lib/dorch, laid out so that only the
local queue is shared with group ``dorch``:

- ``/var/lib/dorch``          0750 dorch:dorch, the service user's home (nobody else writes here)
- ``/var/lib/dorch/queue``    3770 (sticky, setgid): the local queue, shared with group dorch
- ``/var/lib/dorch/private``  0700: the outbox, Discord host state, caches (all instances share it)
- ``/var/lib/dorch/workers/N`` 0700: one instance's state and workspaces

An interactive user gets the platform's user data directory, kept 0700, holding all of it.
``$DORCH_DATA_DIR`` and ``$DORCH_CONFIG_DIR`` override both.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dorch.errors import ConfigError

SERVICE_DATA_DIR = Path("/var/lib/dorch")
SERVICE_QUEUE = SERVICE_DATA_DIR / "queue" / "queue.sqlite3"
SERVICE_PRIVATE_DIR = SERVICE_DATA_DIR / "private"


def under_systemd() -> bool:
    """True in a process systemd started as a service (it sets ``$INVOCATION_ID``)."""
    return bool(os.environ.get("INVOCATION_ID"))


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
    if under_systemd():
        return SERVICE_DATA_DIR
    from platformdirs import user_data_path

    return user_data_path("dorch")


def default_queue() -> Path:
    """The local queue when ``[local] path`` is not set."""
    if under_systemd() and not os.environ.get("DORCH_DATA_DIR"):
        return SERVICE_QUEUE
    return data_dir() / "queue.sqlite3"


def private_dir() -> Path:
    """Where the outbox, the Discord host state and pidfiles live: this user's alone (0700).

    Nothing read from here may come from anyone else: it decides what the worker posts and whom
    it obeys. Created 0700; an existing one of ours is tightened to 0700. Under systemd it is
    the workers' /var/lib/dorch/private when that is ours (another unit, e.g. root's timer
    running `dorch submit`, keeps its own in its user data dir)."""
    env = os.environ.get("DORCH_DATA_DIR")
    if env:
        return ensure_private(Path(env))
    if under_systemd():
        try:
            if os.stat(SERVICE_PRIVATE_DIR).st_uid == os.geteuid():
                return ensure_private(SERVICE_PRIVATE_DIR)
        except FileNotFoundError:
            pass
    from platformdirs import user_data_path

    return ensure_private(user_data_path("dorch"))


def ensure_private(path: Path) -> Path:
    """Make PATH a directory only this user can enter and write (0700); refuse a foreign one
    (ConfigError, exit 78)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(path)  # a symlinked data dir of one's own (e.g. onto another disk) is fine
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{path}: owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); dorch keeps "
            "private state there (outbox, host state). Use a directory of your own "
            "($DORCH_DATA_DIR) or fix its owner"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def worker_state_dir(worker_id: str) -> Path:
    """Per-worker state: systemd's ``$STATE_DIRECTORY`` for a unit, else under the data dir.

    The unit lists ``StateDirectory=dorch/private dorch/workers/%i``; systemd sorts parents first
    in the variable, so take the deepest entry (this instance's own directory).
    """
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return max((Path(p) for p in env.split(":") if p), key=lambda p: len(p.parts))
    return private_dir() / "workers" / worker_id
