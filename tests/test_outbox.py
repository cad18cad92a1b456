"""The outbox: nothing accepted is lost, retries keep their nonce, two drainers never double-send."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dorch.outbox import Item, Outbox, PermanentError


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
        from dorch.outbox import Outbox
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
        from dorch.outbox import Outbox
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
