"""The outbox: a durable local spool for writes that must not be lost (submissions, results, requeues).

An item is committed to SQLite before anything is sent, carries a nonce that stays the same over
every retry (Discord then drops duplicates of a post that did arrive), and is retried with
backoff until its handler succeeds. A Discord outage delays work; it never loses it. Any process
of the same user on the host may drain the outbox (the CLI after a submit, every worker while it
polls).

What it holds decides what dorch posts with its bot token, so the file is its owner's alone
(0600, in a private directory). Delivered items are forgotten after ``RETENTION`` seconds, and
what waits is capped (``MAX_PENDING_ITEMS``/``MAX_PENDING_BYTES``): a full outbox refuses new
items with ``OutboxFull`` instead of growing until every command that opens it crawls.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dorch.bus import BusError
from dorch.errors import DorchError, ExitCode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    nonce TEXT NOT NULL,
    created REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done | failed
    response TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',           -- '' or who alone may deliver it (a bot token's id)
    size INTEGER NOT NULL DEFAULT 0           -- bytes of payload, for the cap
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try);
"""
MAX_BACKOFF = 300.0
RETENTION = 7 * 86400.0  # seconds a delivered item is kept (its response answers `dorch result`)
MAX_PENDING_ITEMS = 10_000
MAX_PENDING_BYTES = 256 << 20


class OutboxFull(BusError):
    """Too much waits to be sent already (Discord unreachable for long?): nothing was stored."""


class PermanentError(DorchError):
    """Raised by a handler when retrying cannot help (e.g. the channel was deleted)."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True)
class Item:
    id: int
    kind: str
    payload: dict[str, Any]
    nonce: str
    created: float
    tries: int
    last_error: str


@dataclass(frozen=True)
class Attempt:
    """One try at delivering ITEM: its handler's RESPONSE, or the ERROR it raised."""

    item: Item
    response: Any = None
    error: Exception | None = None


Handler = Callable[[Item], Awaitable[Any]]


class Outbox:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time, *,
                 max_items: int = MAX_PENDING_ITEMS, max_bytes: int = MAX_PENDING_BYTES,
                 retention: float = RETENTION) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.clock = clock
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._db = self._open(path)
        self.prune(retention)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """Create and set up the file under a lock on its directory: processes that start at
        once on an empty data dir would otherwise race to switch it to WAL ("database is
        locked", which the busy timeout does not cover)."""
        lock = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)  # one written by dorch 0.1 (0660); -wal/-shm follow
            finally:
                os.close(fd)
            db = sqlite3.connect(path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an accepted item must survive a crash
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            if "owner" not in columns:  # a spool written by dorch 0.1.0
                db.execute("ALTER TABLE outbox ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            if "size" not in columns:
                db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
                db.execute("UPDATE outbox SET size = length(CAST(payload AS BLOB))")
            # the cap's sum reads this index only, never the (possibly huge) payloads
            db.execute("CREATE INDEX IF NOT EXISTS outbox_size ON outbox (state, size)")
        finally:
            os.close(lock)  # releases the lock
        return db

    def close(self) -> None:
        self._db.close()

    def put(self, kind: str, payload: dict[str, Any], nonce: str | None = None,
            owner: str = "") -> Item:
        """Store an item durably; returns it (with the nonce to send on every try). OWNER: only
        a ``deliver`` by the same owner sends it (e.g. an edit only its author may make)."""
        nonce = nonce or new_nonce()
        now = self.clock()
        data = json.dumps(payload)
        size = len(data.encode("utf-8", "surrogatepass"))
        count, waiting = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE state = 'pending'"
        ).fetchone()
        if count + 1 > self.max_items or waiting + size > self.max_bytes:
            raise OutboxFull(
                f"{self.path}: the outbox is full ({count:,} items, {waiting / 1e6:,.1f} MB wait "
                f"to be sent; at most {self.max_items:,} items and {self.max_bytes / 1e6:,.0f} "
                f"MB) so this {size / 1e6:,.1f} MB {kind} was not stored: Discord has not "
                "answered for a long time. Check `dorch doctor`; the items are sent once it does"
            )
        cur = self._db.execute(
            "INSERT INTO outbox (kind, payload, nonce, created, next_try, owner, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, data, nonce, now, now, owner, size),
        )
        return Item(int(cur.lastrowid or 0), kind, payload, nonce, now, 0, "")

    def _take(self, lease: float, owner: str) -> Item | None:
        """Lease the oldest due item so two processes never send it at the same moment."""
        now = self.clock()
        row = self._db.execute(
            "UPDATE outbox SET lease_until = ? WHERE id = (SELECT id FROM outbox "
            "WHERE state = 'pending' AND next_try <= ? AND lease_until <= ? "
            "AND owner IN ('', ?) ORDER BY id LIMIT 1) "
            "RETURNING id, kind, payload, nonce, created, tries, last_error",
            (now + lease, now, now, owner),
        ).fetchone()
        if row is None:
            return None
        return Item(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])

    async def deliver(self, handlers: dict[str, Handler], limit: int = 100,
                      lease: float = 60.0, owner: str = "") -> int:
        """Send up to LIMIT due items (unowned, or OWNER's) through their kind's handler;
        returns how many succeeded.

        A handler that raises schedules a retry with exponential backoff and jitter; one that raises
        PermanentError marks the item failed (kept, and shown by ``dorch status``)."""
        sent = 0
        for _ in range(limit):
            attempt = await self.deliver_next(handlers, lease, owner)
            if attempt is None:
                break
            sent += attempt.error is None
        return sent

    async def deliver_next(self, handlers: dict[str, Handler], lease: float = 60.0,
                           owner: str = "") -> Attempt | None:
        """Send the oldest due item with a handler (unowned, or OWNER's); what came of it, or
        None when nothing is due. A failure is recorded as ``deliver`` says, and returned."""
        item = self._take(lease, owner)
        if item is None:
            return None
        handler = handlers.get(item.kind)
        if handler is None:  # a kind this version does not know: left for one that does
            self._release(item)
            return None
        try:
            response = await handler(item)
        except PermanentError as exc:
            self._finish(item, "failed", error=str(exc))
            return Attempt(item, error=exc)
        except Exception as exc:
            self._retry(item, f"{type(exc).__name__}: {exc}")
            return Attempt(item, error=exc)
        self._finish(item, "done", response=response)
        return Attempt(item, response)

    def _release(self, item: Item) -> None:
        self._db.execute("UPDATE outbox SET lease_until = 0 WHERE id = ?", (item.id,))

    def _retry(self, item: Item, error: str) -> None:
        delay = min(2.0 ** item.tries, MAX_BACKOFF) * random.uniform(0.5, 1.0)
        self._db.execute(
            "UPDATE outbox SET tries = tries + 1, next_try = ?, lease_until = 0, last_error = ? "
            "WHERE id = ?",
            (self.clock() + delay, error[:500], item.id),
        )

    def _finish(self, item: Item, state: str, error: str = "", response: Any = None) -> None:
        self._db.execute(
            "UPDATE outbox SET state = ?, tries = tries + 1, lease_until = 0, last_error = ?, "
            "response = ? WHERE id = ?",
            (state, error[:500], json.dumps(response, default=str), item.id),
        )

    def retry_now(self) -> int:
        """Make every pending item due now (Discord is back: do not wait out the backoff)."""
        return self._db.execute(
            "UPDATE outbox SET next_try = ? WHERE state = 'pending' AND next_try > ?",
            (self.clock(), self.clock()),
        ).rowcount

    def response(self, item_id: int) -> Any:
        """What the handler returned for a delivered item (e.g. the created message), else None."""
        row = self._db.execute(
            "SELECT state, response FROM outbox WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None or row[0] != "done":
            return None
        return json.loads(row[1]) if row[1] else None

    def pending(self) -> list[Item]:
        rows = self._db.execute(
            "SELECT id, kind, payload, nonce, created, tries, last_error FROM outbox "
            "WHERE state = 'pending' ORDER BY id"
        ).fetchall()
        return [Item(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def failed(self) -> list[Item]:
        rows = self._db.execute(
            "SELECT id, kind, payload, nonce, created, tries, last_error FROM outbox "
            "WHERE state = 'failed' ORDER BY id"
        ).fetchall()
        return [Item(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def prune(self, older_than: float = RETENTION) -> int:
        """Forget delivered items older than OLDER_THAN seconds (done at every open)."""
        cur = self._db.execute(
            "DELETE FROM outbox WHERE state = 'done' AND created < ?", (self.clock() - older_than,)
        )
        return cur.rowcount


def new_nonce() -> str:
    """A Discord nonce (at most 25 characters), unique across hosts and processes."""
    return f"{os.getpid() % 1000:03d}{secrets.token_hex(10)}"[:25]
