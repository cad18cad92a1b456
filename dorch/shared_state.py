"""A small JSON document shared by every dorch process on a host, changed under an fcntl lock.

The Discord client keeps its rate-limit buckets and the host's invalid-request count here, so
several workers sharing one bot token (or one IP address) see each other's requests. The state
is soft: a missing or damaged file is an empty one. Critical sections never await, so the
blocking ``flock`` is held for microseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SharedState:
    """``with state.locked() as doc:`` read, change and write back ``doc`` atomically.

    With ``path=None`` the document lives in this process only (tests, one-shot commands).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # this user's alone (in the private dir): what it says decides how dorch behaves
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600)
        return self._fd

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        if self.path is None:
            yield self._memory
            return
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(fd, 1 << 20, 0)
            doc: dict[str, Any] = {}
            if raw:
                try:
                    loaded = json.loads(raw)
                    doc = loaded if isinstance(loaded, dict) else {}
                except ValueError:
                    log.warning("%s: damaged shared state, starting afresh", self.path)
            before = raw
            yield doc
            after = json.dumps(doc, separators=(",", ":")).encode()
            if after != before:
                os.ftruncate(fd, 0)
                os.pwrite(fd, after, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
