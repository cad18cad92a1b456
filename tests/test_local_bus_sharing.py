"""One queue shared by several users: services running as one user, an admin's CLI as another.

Real processes under real user ids (so this needs root to set them up). The directory is
group-writable and owned by a shared group but deliberately *not* setgid, the harder case: the
-wal/-shm files one user creates must still be writable by the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dorch.bus.local import LocalBus
from tests.test_local_bus_processes import PROC, together

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to run processes as two other users",
)

GROUP = 47_310  # the shared group ("dorch" on a real machine); ids need not exist in /etc
ALICE, BOB = 47_311, 47_312  # e.g. the service user and an admin, both in GROUP


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, the users could not enter.
    base = Path(tempfile.mkdtemp(prefix="dorch-share-"))
    try:
        base.chmod(0o755)
        shared = base / "queue"
        shared.mkdir()
        os.chown(shared, 0, GROUP)
        shared.chmod(0o770)
        yield shared
    finally:
        shutil.rmtree(base)


def as_user(uid: int) -> dict[str, dict[str, str]]:
    """Popen arguments: the process switches to UID (primary group UID, member of GROUP)."""
    return {"env": {**os.environ, "HOME": "/nonexistent", "DORCH_TEST_AS": f"{uid}:{uid}:{GROUP}"}}


def test_two_users_share_one_queue(shared_dir: Path) -> None:
    queue = shared_dir / "queue.sqlite3"
    # Alice creates the queue and keeps it open, so her -wal and -shm files stay in place.
    alice = subprocess.Popen([sys.executable, str(PROC), str(queue), "alice", "hold"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **as_user(ALICE))
    try:
        assert alice.stdout is not None and alice.stdin is not None
        assert alice.stdout.readline() == "ready\n", alice.communicate()[1]
        alice.stdin.write("go\n")
        alice.stdin.flush()
        assert json.loads(alice.stdout.readline()) is None

        st = queue.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (ALICE, GROUP, 0o660)
        for suffix in ("-wal", "-shm"):
            side = queue.with_name(queue.name + suffix).stat()
            assert (side.st_gid, side.st_mode & 0o777) == (GROUP, 0o660), suffix

        # Bob writes through Alice's -wal/-shm; then Alice's side claims and finishes.
        (ids,) = together(queue, [["bob", "submit", "5"]], **as_user(BOB))
        (claimed,) = together(queue, [["alice2", "claim-all"]], **as_user(ALICE))
        assert sorted(claimed, key=int) == sorted(ids, key=int) and len(ids) == 5
    finally:
        if alice.stdin is not None:
            alice.stdin.close()
        alice.wait(timeout=60)
    assert alice.returncode == 0, alice.stderr.read() if alice.stderr else ""

    bus = LocalBus(queue)
    assert asyncio.run(bus.status()).counts["succeeded"] == 5
    asyncio.run(bus.close())


def test_a_directory_of_the_root_group_is_not_shared(shared_dir: Path) -> None:
    os.chown(shared_dir, 0, 0)
    queue = shared_dir / "queue.sqlite3"
    asyncio.run(LocalBus(queue).close())
    assert queue.stat().st_mode & 0o777 == 0o600
