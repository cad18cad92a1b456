"""One queue shared by several users: services running as one user, an admin's CLI as another.

Real processes under real user ids (so this needs root to set them up). The directory belongs
to the service user, is group-writable and sticky, but deliberately *not* setgid, the harder
case: the -wal/-shm files one user creates must still be writable by the other.

A shared directory is also where a group member can plant symbolic links for root's CLI to
follow: those tests check that nothing outside the directory changes, planted or raced.
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

from dorch.bus import BusConfigError, BusError
from dorch.bus.local import LocalBus
from dorch.model import TaskSpec
from tests.support.helpers import SUPPORT
from tests.support.procs import LOCAL_BUS_PROC as PROC
from tests.support.procs import together

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to run processes as two other users",
)

GROUP = 47_310  # the shared group ("dorch" on a real machine); ids need not exist in /etc
ALICE, BOB = 47_311, 47_312  # e.g. the service user and an admin, both in GROUP
SWAPPER = SUPPORT / "link_swapper.py"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, the users could not enter.
    base = Path(tempfile.mkdtemp(prefix="dorch-share-"))
    try:
        base.chmod(0o755)
        shared = base / "queue"
        shared.mkdir()
        os.chown(shared, ALICE, GROUP)  # as /var/lib/dorch/queue: the service user's
        shared.chmod(0o1770)
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


# -- root's CLI on a shared directory where a group member plants links -------------------------


@pytest.fixture
def outside() -> Iterator[Path]:
    """A file root owns outside the queue's directory (think /etc/shadow)."""
    base = Path(tempfile.mkdtemp(prefix="dorch-outside-"))
    try:
        secret = base / "shadow"
        secret.write_text("root:$y$secret:19000::::::\n")
        secret.chmod(0o600)
        yield secret
    finally:
        shutil.rmtree(base)


def fingerprint(path: Path) -> tuple[int, int, int, bytes, list[str]]:
    st = path.stat()
    return st.st_uid, st.st_gid, st.st_mode, path.read_bytes(), sorted(os.listdir(path.parent))


def plant(link: Path, target: Path) -> None:
    os.symlink(target, link)
    os.lchown(link, BOB, GROUP)  # as if Bob, a member of the group, had made it


def root_opens(queue: Path) -> str:
    """What root's `dorch status`/`submit` does: open, read, write, close; the error if refused."""
    try:
        bus = LocalBus(queue, busy_timeout=2)
    except (BusConfigError, BusError) as exc:
        return str(exc)
    try:
        asyncio.run(bus.status())
        asyncio.run(bus.submit(TaskSpec(prompt="from root")))
    except BusError as exc:
        return str(exc)
    finally:
        asyncio.run(bus.close())
    return ""


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_root_refuses_a_planted_sidecar_link(shared_dir: Path, outside: Path,
                                             suffix: str) -> None:
    queue = shared_dir / "queue.sqlite3"
    together(queue, [["alice", "submit", "1"]], **as_user(ALICE))
    before = fingerprint(outside)
    plant(queue.with_name(queue.name + suffix), outside)
    error = root_opens(queue)
    assert "is a symbolic link" in error and suffix in error
    assert fingerprint(outside) == before


def test_root_refuses_a_planted_queue_link(shared_dir: Path, outside: Path) -> None:
    queue = shared_dir / "queue.sqlite3"
    missing = outside.with_name("created-by-root")  # a dangling link: SQLite would create it
    plant(queue, missing)
    before = fingerprint(outside)
    assert "is a symbolic link" in root_opens(queue)
    assert not missing.exists() and fingerprint(outside) == before
    queue.unlink()
    empty = outside.with_name("empty")  # an empty file: SQLite would make it a database
    empty.touch()
    plant(queue, empty)
    assert "is a symbolic link" in root_opens(queue)
    assert empty.stat().st_size == 0


def test_root_refuses_a_queue_a_group_member_made(shared_dir: Path) -> None:
    queue = shared_dir / "queue.sqlite3"
    together(queue, [["bob", "submit", "1"]], **as_user(BOB))
    error = root_opens(queue)
    assert f"belongs to uid {BOB}" in error and "swap it" in error


def test_a_shared_directory_must_be_sticky(shared_dir: Path) -> None:
    shared_dir.chmod(0o2770)
    with pytest.raises(BusConfigError, match=r"not sticky.*chmod \+t"):
        LocalBus(shared_dir / "queue.sqlite3")


def swap_while_root_opens(directory: Path, queue: Path, target: Path, mode: str,
                          names: list[str], opens: int) -> list[str]:
    """Bob swaps links in for NAMES in a tight loop while root opens the queue OPENS times."""
    stop = directory.parent / "stop"  # not beside TARGET: its directory must not change
    stop.unlink(missing_ok=True)
    swapper = subprocess.Popen(
        [sys.executable, str(SWAPPER), str(directory), str(target), str(stop), mode, *names],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **as_user(BOB))
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline() == "ready\n", swapper.communicate()[1]
        errors = [root_opens(queue) for _ in range(opens)]
    finally:
        stop.touch()
        _, err = swapper.communicate(timeout=120)
    assert swapper.returncode == 0, err
    return errors


def test_raced_links_in_an_old_group_writable_directory_change_nothing_outside(
        shared_dir: Path, outside: Path) -> None:
    """The layout before 0.2 (/var/lib/dorch: 2770, no sticky bit), where root's CLI used to
    chown the target of a -wal link swapped in right after SQLite made the file."""
    os.chown(shared_dir, 0, GROUP)
    shared_dir.chmod(0o770)
    before = fingerprint(outside)
    errors = swap_while_root_opens(shared_dir, shared_dir / "queue.sqlite3", outside,
                                   "replace", ["queue.sqlite3-wal", "queue.sqlite3-shm"], opens=150)
    assert fingerprint(outside) == before
    assert all("not sticky" in e for e in errors), set(errors)


def test_raced_links_in_the_sticky_directory_change_nothing_outside(
        shared_dir: Path, outside: Path) -> None:
    queue = shared_dir / "queue.sqlite3"
    together(queue, [["alice", "submit", "1"]], **as_user(ALICE))
    before = fingerprint(outside)
    names = [queue.name + s for s in ("", "-wal", "-shm", "-journal")]
    errors = swap_while_root_opens(shared_dir, queue, outside, "both", names, opens=150)
    assert fingerprint(outside) == before
    assert all(e == "" or "symbolic link" in e or "busy" in e for e in errors), set(errors)
