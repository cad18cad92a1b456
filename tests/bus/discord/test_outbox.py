"""The outbox: nothing accepted is lost, retries keep their nonce, two drainers never double-send."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dorch.bus.discord.outbox import Item, Outbox, OutboxFull, PermanentError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_item_survives_a_crash_before_delivery(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from dorch.bus.discord.outbox import Outbox
        Outbox(Path({str(path)!r})).put("result", {{"task": "7", "text": "ünï"}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    items = Outbox(path).pending()
    assert [(i.kind, i.payload) for i in items] == [("result", {"task": "7", "text": "ünï"})]


def test_retries_keep_the_nonce_and_back_off(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.sqlite3", clock=clock)
    item = box.put("submit", {"n": 1})
    seen: list[str] = []

    async def flaky(it: Item) -> dict[str, str]:
        seen.append(it.nonce)
        if len(seen) < 3:
            raise ConnectionError("discord is down")
        return {"id": "99"}

    assert asyncio.run(box.deliver({"submit": flaky})) == 0
    assert asyncio.run(box.deliver({"submit": flaky})) == 0  # not due yet: backing off
    assert len(seen) == 1
    for _ in range(2):
        clock.now += 400
        asyncio.run(box.deliver({"submit": flaky}))
    assert seen == [item.nonce] * 3
    assert box.pending() == []
    assert box.response(item.id) == {"id": "99"}


def test_permanent_failure_is_kept_and_visible(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put("result", {"n": 1})

    async def broken(it: Item) -> None:
        raise PermanentError("channel 5 no longer exists")

    asyncio.run(box.deliver({"result": broken}))
    assert box.pending() == []
    assert [i.last_error for i in box.failed()] == ["channel 5 no longer exists"]


def test_unknown_kind_stays_pending(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put("future-kind", {})
    asyncio.run(box.deliver({}))
    assert len(box.pending()) == 1


def test_two_processes_draining_send_each_item_once(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path)
    for n in range(200):
        box.put("post", {"n": n})
    sent = tmp_path / "sent.jsonl"
    code = textwrap.dedent(f"""
        import asyncio, json, os
        from pathlib import Path
        from dorch.bus.discord.outbox import Outbox
        box = Outbox(Path({str(path)!r}))
        async def post(item):
            fd = os.open({str(sent)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, (json.dumps(item.payload) + "\\n").encode())
            os.close(fd)
            await asyncio.sleep(0)
        while asyncio.run(box.deliver({{"post": post}}, limit=10)):
            pass
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    numbers = [json.loads(line)["n"] for line in sent.read_text().splitlines()]
    assert sorted(numbers) == list(range(200))
    assert box.pending() == []


# -- the file: private, pruned, bounded, safe to open from many processes at once ----------------

FIRST_OPEN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dorch.bus.discord.outbox import Outbox
    print("ready", flush=True)
    sys.stdin.readline()
    box = Outbox(Path(sys.argv[1]))
    box.put("submit", {"n": 1})
    print(len(box.pending()), flush=True)
""")


def test_many_processes_open_a_new_outbox_at_once(tmp_path: Path) -> None:
    """14 workers starting together on an empty data dir: once, one died on "database is
    locked" at the outbox's PRAGMA journal_mode=WAL."""
    for round_ in range(4):
        path = tmp_path / f"data{round_}" / "outbox.sqlite3"
        procs = [subprocess.Popen([sys.executable, "-c", FIRST_OPEN, str(path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(14)]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
            for p in procs:  # all released at once
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            failures = [err for p in procs
                        for _, err in [p.communicate(timeout=120)] if p.returncode != 0]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert failures == []
        assert len(Outbox(path).pending()) == 14


def test_the_outbox_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o002)
    try:
        box = Outbox(tmp_path / "new" / "outbox.sqlite3")
        box.put("submit", {"n": 1})
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"):
            assert stat.S_IMODE((tmp_path / "new" / name).stat().st_mode) == 0o600, name
        box.close()
        # one that dorch 0.1 left group-writable is tightened when opened
        (tmp_path / "new" / "outbox.sqlite3").chmod(0o660)
        Outbox(tmp_path / "new" / "outbox.sqlite3").close()
        assert stat.S_IMODE((tmp_path / "new" / "outbox.sqlite3").stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)


def test_delivered_items_are_pruned_when_the_outbox_is_opened(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, clock=clock)
    sent = box.put("result", {"task": "1"})
    waiting = box.put("result", {"task": "2"})

    async def ok(item: Item) -> dict[str, str]:
        return {"id": item.payload["task"]}

    assert asyncio.run(box.deliver({"result": ok}, limit=1)) == 1
    box.close()
    clock.now += 6 * 86400
    assert Outbox(path, clock=clock).response(sent.id) == {"id": "1"}  # still answers
    clock.now += 2 * 86400
    box = Outbox(path, clock=clock)
    assert box.response(sent.id) is None
    assert [i.id for i in box.pending()] == [waiting.id]  # never drops what was not sent


def test_a_full_outbox_refuses_new_items_clearly(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3", max_bytes=10_000, max_items=2)
    box.put("result", {"output": "x" * 6000})
    with pytest.raises(OutboxFull, match=r"outbox is full \(1 items.*was not stored"):
        box.put("result", {"output": "y" * 6000})
    box.put("submit", {"n": 1})
    with pytest.raises(OutboxFull, match="at most 2 items"):
        box.put("submit", {"n": 2})
    assert [i.kind for i in box.pending()] == ["result", "submit"]

    async def ok(item: Item) -> None:
        return None

    asyncio.run(box.deliver({"result": ok, "submit": ok}))
    box.put("result", {"output": "y" * 6000})  # room again once delivered
