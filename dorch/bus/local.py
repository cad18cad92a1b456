"""The local bus: the Bus contract over one SQLite file, for any number of processes on one machine.

Why SQLite: one file, no server, and its write lock gives the compare-and-set that claiming,
fencing and reaping need. The file runs in WAL mode (readers never wait for the writer) with a
busy timeout, so processes queue for the write lock instead of failing.

- Claim is one ``UPDATE ... WHERE id = (oldest queued) RETURNING``: a single statement takes the
  write lock before it reads, so two processes can never both get one task.
- Every claim gets a fresh random token. Heartbeat, finish and release only act while the row
  still carries that token; once a reaper has requeued the task the old holder is fenced.
- Multi-statement changes (finish, release, reap, migrations) run in ``BEGIN IMMEDIATE``.

Sharing one queue between users (services running as ``dorch``, an admin's CLI): when the
queue's directory is group-writable and owned by a non-root group, a new queue file is created
mode 0660 with the directory's group (regardless of the umask), and SQLite gives its -wal and
-shm files the same mode. Make that directory setgid (mode 2770) so the -wal and -shm files get
its group whoever creates them; without setgid, dorch moves the ones it creates to that group
(best effort). Otherwise the file is private to its owner (0600): prompts and results may be
confidential.

A shared directory is a place others can plant files, and root's CLI opens the queue too, so
nothing here follows a symbolic link: a directory writable by others must be sticky (mode 3770,
or others could swap the queue between a check and SQLite's open); the queue, -wal, -shm and
-journal must not be symbolic links (SQLite follows one for the queue itself) or hard links; the
queue must belong to us, root or the directory's owner; and the group of the -wal/-shm files is
changed through a descriptor opened with O_NOFOLLOW, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dorch.bus import BusConfigError, BusError
from dorch.model import Claim, Lease, Result, State, Status, Task, TaskSpec, TaskView, WorkerView, validate

BUSY_TIMEOUT = 10.0  # seconds a process waits for the write lock before giving up (exit 75)
WORKER_ROWS_KEPT = 86400.0  # idle worker-board rows older than this are dropped
WAL_SIZE_LIMIT = 64 << 20  # bytes the -wal file is cut back to after a big result is checkpointed

_STATES = ", ".join(f"'{s.value}'" for s in State)

# Each entry upgrades the schema by one version; ``PRAGMA user_version`` is the number applied.
# Never edit a released entry: append a new one (ALTER TABLE, data fixes) instead.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        f"""CREATE TABLE tasks (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- the id users see; never reused
            prompt       TEXT NOT NULL,
            model        TEXT,
            thinking     TEXT,
            submitter    TEXT NOT NULL DEFAULT '',
            submitted_at REAL NOT NULL,
            state        TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ({_STATES})),
            attempt      INTEGER NOT NULL DEFAULT 1,
            worker       TEXT NOT NULL DEFAULT '',
            token        TEXT,                          -- fencing token of the current claim
            lease_until  REAL,
            started_at   REAL,
            finished_at  REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            output       TEXT,
            error        TEXT,
            stderr_tail  TEXT,
            duration     REAL,
            usage        TEXT                           -- JSON object
        )""",
        "CREATE INDEX tasks_by_state ON tasks (state, id)",
        "CREATE INDEX tasks_by_lease ON tasks (state, lease_until)",
        "CREATE INDEX tasks_by_finish ON tasks (state, finished_at)",
        """CREATE TABLE attempts (
            id         INTEGER PRIMARY KEY,
            task_id    INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            attempt    INTEGER NOT NULL,
            worker     TEXT NOT NULL,
            outcome    TEXT NOT NULL CHECK (outcome IN ('finished', 'released', 'lost')),
            state      TEXT,                            -- the task state this attempt left
            started_at REAL,
            ended_at   REAL NOT NULL
        )""",
        "CREATE INDEX attempts_by_task ON attempts (task_id, id)",
        """CREATE TABLE workers (
            worker     TEXT PRIMARY KEY,
            state      TEXT NOT NULL,
            task_id    TEXT NOT NULL DEFAULT '',
            host       TEXT NOT NULL DEFAULT '',
            pid        INTEGER NOT NULL DEFAULT 0,
            version    TEXT NOT NULL DEFAULT '',
            tasks_done INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )""",
    ),
]
SCHEMA_VERSION = len(_MIGRATIONS)

_TASK_COLUMNS = (
    "id, prompt, model, thinking, submitter, submitted_at, state, attempt, worker, started_at, "
    "finished_at, output, error, stderr_tail, duration, usage"
)

# The claim: one statement, so taking the oldest queued task and marking it ours is atomic.
_CLAIM_SQL = """
UPDATE tasks
   SET state = 'running', worker = :worker, token = :token, lease_until = :now + :lease,
       started_at = :now, finished_at = NULL
 WHERE id = (SELECT id FROM tasks
              WHERE state = 'queued' AND cancel_requested = 0
              ORDER BY id LIMIT 1)
RETURNING id, prompt, model, thinking, submitter, submitted_at, attempt, lease_until
"""

_ID = re.compile(r"^[0-9]{1,18}$")


@dataclass(frozen=True)
class Attempt:
    """One row of a task's attempt history (``LocalBus.history``)."""

    attempt: int
    worker: str
    outcome: str  # finished | released | lost
    state: str  # the task state the attempt left: succeeded, queued, dead, ...
    started_at: float | None
    ended_at: float


def _text(value: str) -> str:
    """TEXT as given; lone surrogates (undecodable agent output) become escapes, not a crash."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


_SIDECARS = ("-wal", "-shm", "-journal")


def _unsafe(path: Path, message: str) -> BusConfigError:
    return BusConfigError(f"{path}: {message}; dorch refuses to open the local queue through it")


def _check_directory(directory: Path) -> os.stat_result:
    """The queue's directory; refused when others may rename files in it (writable, not sticky)."""
    st = directory.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise BusConfigError(
            f"{directory}: the local queue's directory is writable by others but not sticky, so "
            "anyone who may write it could swap the queue for a symbolic link; run "
            f"`chmod +t {directory}` (the packages use /var/lib/dorch/queue, mode 3770)"
        )
    return st


def _check_files(path: Path, where: os.stat_result) -> None:
    """Refuse a queue (or -wal/-shm/-journal) that is a link, or a queue nobody trusted made."""
    for name in (path.name, *(path.name + s for s in _SIDECARS)):
        try:
            st = os.lstat(path.with_name(name))
        except FileNotFoundError:
            continue
        shown = path.with_name(name)
        if stat.S_ISLNK(st.st_mode):
            raise _unsafe(shown, "is a symbolic link (remove it: someone may be trying to make "
                          "dorch write elsewhere)")
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(shown, "is not a regular file")
        if st.st_nlink > 1:
            raise _unsafe(shown, f"has {st.st_nlink} hard links (remove it: a hard link may "
                          "point at a file outside the queue)")
        if name == path.name and st.st_uid not in (os.geteuid(), 0, where.st_uid):
            raise _unsafe(shown, f"belongs to uid {st.st_uid}, not to you, root or the "
                          f"directory's owner (uid {where.st_uid}), so its owner could swap it "
                          "for a symbolic link; have the directory's owner (the workers) create "
                          "the queue, or chown it to that user")


def _shared_gid(st: os.stat_result) -> int | None:
    """The group a queue in a directory (its stat ST) is shared with, or None when private."""
    if st.st_gid != 0 and st.st_mode & stat.S_IWGRP:
        return st.st_gid
    return None


def _create_file(path: Path, gid: int | None) -> None:
    """Create an empty queue file with the right mode and group before SQLite opens it."""
    mode = 0o660 if gid is not None else 0o600
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)  # the umask must not take the group's write bit away
        if gid is not None and os.fstat(fd).st_gid != gid:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, gid)
    finally:
        os.close(fd)


def _share_sidecars(path: Path, gid: int) -> None:
    """Give the -wal/-shm files this process created the queue's group (no-op under setgid).

    By descriptor, opened without following a link: a name in a shared directory can be
    swapped between a stat and a chown."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            fd = os.open(side, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_gid != gid
                    and st.st_uid == os.geteuid()):
                with contextlib.suppress(OSError):
                    os.fchown(fd, -1, gid)
        finally:
            os.close(fd)


class LocalBus:
    """The Bus over one SQLite file. Methods are async to match the contract; each SQLite call
    is short and runs inline. One instance per process; not for use from several threads."""

    wait_interval = 0.5  # s between looks of `dorch submit --wait` (one cheap query each)

    def __init__(
        self,
        path: Path,
        max_attempts: int = 3,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        if max_attempts < 1:
            raise BusConfigError(f"max_attempts must be at least 1, not {max_attempts}")
        self.path = Path(path)
        self.max_attempts = max_attempts
        self._clock = clock
        self._db = self._open(busy_timeout)

    # -- opening and schema -------------------------------------------------------------

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        where = self.path.parent
        try:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
            where_st = _check_directory(where)
            gid = _shared_gid(where_st)
            _create_file(self.path, gid)
            _check_files(self.path, where_st)
        except OSError as exc:
            raise BusConfigError(
                f"{self.path}: cannot create the local queue ({exc.strerror}); set [local] path "
                "to a writable place or fix the directory's permissions"
            ) from exc
        try:
            db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._config_error(exc) from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise BusConfigError(
                    f"{self.path}: SQLite cannot use WAL mode here (got {mode!r}); put the queue "
                    "on a local file system"
                )
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the last
            # commits but never corrupts the file; no fsync per claim
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
            if gid is not None:
                _share_sidecars(self.path, gid)
        except BusError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise BusError(f"{self.path}: the local queue is busy ({exc}); try again") from exc
            raise self._config_error(exc) from exc
        return db

    def _config_error(self, exc: sqlite3.Error) -> BusConfigError:
        try:  # a link planted while SQLite opened the files: say so, not "unable to open"
            _check_files(self.path, self.path.parent.stat())
        except BusConfigError as unsafe:
            return unsafe
        except OSError:
            pass
        text = str(exc)
        if "not a database" in text:
            hint = "it is not a dorch queue; point [local] path at another file"
        elif "readonly" in text or "unable to open" in text:
            hint = "check that this user may write the file and its directory"
        else:
            hint = "check the file and its directory"
        return BusConfigError(f"{self.path}: cannot open the local queue: {text}; {hint}")

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._check_version(version)
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may
            self._check_version(version)  # have migrated while we waited for the lock
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BusConfigError(
                f"{self.path}: the local queue has schema version {version}, but this dorch "
                f"knows only up to {SCHEMA_VERSION}; upgrade dorch (a newer release wrote it)"
            )

    # -- helpers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite trouble becomes BusError (exit 75: try again later)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise BusError(f"{self.path}: local queue error: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A transaction holding the write lock from the start (no stale-snapshot upgrade)."""
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one snapshot."""
        with self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    @staticmethod
    def _task_id(task_id: str) -> int | None:
        return int(task_id) if isinstance(task_id, str) and _ID.match(task_id) else None

    @staticmethod
    def _view(row: sqlite3.Row | tuple[Any, ...]) -> TaskView:
        (tid, prompt, model, thinking, submitter, submitted_at, state, attempt, worker,
         started_at, finished_at, output, error, stderr_tail, duration, usage) = row
        task = Task(str(tid), TaskSpec(prompt, model, thinking), attempt, submitter, submitted_at)
        st = State(state)
        result = None
        if st.finished:
            result = Result(
                st, output or "", error or "", stderr_tail or "", duration or 0.0,
                json.loads(usage) if usage else {},
            )
        return TaskView(task, st, worker, started_at, finished_at, result)

    # -- the Bus contract -------------------------------------------------------------------

    async def submit(self, spec: TaskSpec, submitter: str = "") -> str:
        """Queue SPEC (validated again: the bus never stores what a worker cannot run)."""
        spec = validate(spec)
        with self._errors():
            cur = self._db.execute(
                "INSERT INTO tasks (prompt, model, thinking, submitter, submitted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (spec.prompt, spec.model, spec.thinking, _text(submitter), self._clock()),
            )
        return str(cur.lastrowid)

    async def claim(self, worker: str, lease_seconds: float) -> Claim | None:
        token = secrets.token_hex(16)
        with self._errors():
            row = self._db.execute(
                _CLAIM_SQL,
                {"worker": worker, "token": token, "now": self._clock(), "lease": lease_seconds},
            ).fetchone()
        if row is None:
            return None
        tid, prompt, model, thinking, submitter, submitted_at, attempt, lease_until = row
        task = Task(str(tid), TaskSpec(prompt, model, thinking), attempt, submitter, submitted_at)
        return Claim(task, worker, token, lease_until)

    async def heartbeat(self, claim: Claim, lease_seconds: float) -> Lease:
        """Extend the lease while the claim is current; LOST once another worker may have it.

        A lease that expired but was not reaped yet is still current: nobody else holds it."""
        with self._errors():
            row = self._db.execute(
                "UPDATE tasks SET lease_until = ? WHERE id = ? AND token = ? AND state = 'running' "
                "RETURNING cancel_requested",
                (self._clock() + lease_seconds, int(claim.task.id), claim.token),
            ).fetchone()
        if row is None:
            return Lease.LOST
        return Lease.CANCELLED if row[0] else Lease.HELD

    async def finish(self, claim: Claim, result: Result) -> bool:
        """Store RESULT if CLAIM is still current; False (nothing stored) if it was fenced."""
        if not result.state.finished:
            raise ValueError(f"finish needs a final state, not {result.state.value!r}")
        now = self._clock()
        usage = json.dumps(result.usage, ensure_ascii=False, default=str)
        with self._write() as db:
            row = db.execute(
                "UPDATE tasks SET state = ?, output = ?, error = ?, stderr_tail = ?, duration = ?, "
                "usage = ?, finished_at = ?, token = NULL, lease_until = NULL "
                "WHERE id = ? AND token = ? AND state = 'running' RETURNING attempt, started_at",
                (result.state.value, _text(result.output), _text(result.error),
                 _text(result.stderr_tail), result.duration, usage, now,
                 int(claim.task.id), claim.token),
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "INSERT INTO attempts (task_id, attempt, worker, outcome, state, started_at, "
                "ended_at) VALUES (?, ?, ?, 'finished', ?, ?, ?)",
                (int(claim.task.id), row[0], claim.worker, result.state.value, row[1], now),
            )
        return True

    async def release(self, claim: Claim) -> None:
        """Hand the task back without spending an attempt (cancelled instead if that was asked)."""
        now = self._clock()
        tid = int(claim.task.id)
        with self._write() as db:
            row = db.execute(
                "SELECT attempt, started_at, cancel_requested FROM tasks "
                "WHERE id = ? AND token = ? AND state = 'running'",
                (tid, claim.token),
            ).fetchone()
            if row is None:
                return
            attempt, started_at, cancelled = row
            if cancelled:
                db.execute(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ?, "
                    "error = 'cancelled by request', token = NULL, lease_until = NULL "
                    "WHERE id = ?",
                    (now, tid),
                )
            else:
                db.execute(
                    "UPDATE tasks SET state = 'queued', worker = '', started_at = NULL, "
                    "token = NULL, lease_until = NULL WHERE id = ?",
                    (tid,),
                )
            db.execute(
                "INSERT INTO attempts (task_id, attempt, worker, outcome, state, started_at, "
                "ended_at) VALUES (?, ?, ?, 'released', ?, ?, ?)",
                (tid, attempt, claim.worker, "cancelled" if cancelled else "queued", started_at,
                 now),
            )

    async def reap(self, max_attempts: int | None = None) -> int:
        """Requeue every running task whose lease expired as attempt k+1, or mark it dead after
        the last attempt. Returns how many were reaped; concurrent reapers reap each lease once."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        now = self._clock()
        expired = "state = 'running' AND lease_until < :now"
        with self._errors():
            # Cheap check first: every worker polls this, and most polls find nothing.
            if self._db.execute(f"SELECT 1 FROM tasks WHERE {expired} LIMIT 1",
                                {"now": now}).fetchone() is None:
                return 0
        with self._write() as db:
            db.execute(
                "INSERT INTO attempts (task_id, attempt, worker, outcome, state, started_at, "
                "ended_at) SELECT id, attempt, worker, 'lost', CASE "
                "WHEN cancel_requested THEN 'cancelled' "
                "WHEN attempt >= :limit THEN 'dead' ELSE 'queued' END, started_at, :now "
                f"FROM tasks WHERE {expired}",
                {"now": now, "limit": limit},
            )
            cur = db.execute(
                "UPDATE tasks SET "
                "error = CASE WHEN cancel_requested THEN 'cancelled by request; its worker was lost' "
                "WHEN attempt >= :limit THEN 'gave up: the lease of attempt ' || attempt || "
                "' of ' || :limit || ' expired (worker ' || worker || ' died or hung)' END, "
                "finished_at = CASE WHEN cancel_requested OR attempt >= :limit THEN :now END, "
                "worker = CASE WHEN cancel_requested OR attempt >= :limit THEN worker ELSE '' END, "
                "started_at = CASE WHEN cancel_requested OR attempt >= :limit THEN started_at END, "
                "attempt = CASE WHEN cancel_requested OR attempt >= :limit THEN attempt "
                "ELSE attempt + 1 END, "
                "state = CASE WHEN cancel_requested THEN 'cancelled' "
                "WHEN attempt >= :limit THEN 'dead' ELSE 'queued' END, "
                f"token = NULL, lease_until = NULL WHERE {expired}",
                {"now": now, "limit": limit},
            )
            return cur.rowcount

    async def cancel(self, task_id: str) -> bool:
        """Queued: cancelled at once. Running: flagged, the worker stops at its next heartbeat.
        False when the task is unknown or already finished."""
        tid = self._task_id(task_id)
        if tid is None:
            return False
        with self._errors():
            row = self._db.execute(
                "UPDATE tasks SET cancel_requested = 1, "
                "finished_at = CASE state WHEN 'queued' THEN :now ELSE finished_at END, "
                "error = CASE state WHEN 'queued' THEN 'cancelled before it started' "
                "ELSE error END, "
                "state = CASE state WHEN 'queued' THEN 'cancelled' ELSE state END "
                "WHERE id = :id AND state IN ('queued', 'running') RETURNING id",
                {"now": self._clock(), "id": tid},
            ).fetchone()
        return row is not None

    async def get(self, task_id: str) -> TaskView | None:
        tid = self._task_id(task_id)
        if tid is None:
            return None
        with self._errors():
            row = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (tid,)
            ).fetchone()
        return None if row is None else self._view(row)

    def history(self, task_id: str) -> list[Attempt]:
        """Every attempt of a task, oldest first (finished, released or lost)."""
        tid = self._task_id(task_id)
        if tid is None:
            return []
        with self._errors():
            rows = self._db.execute(
                "SELECT attempt, worker, outcome, state, started_at, ended_at FROM attempts "
                "WHERE task_id = ? ORDER BY id", (tid,)
            ).fetchall()
        return [Attempt(*row) for row in rows]

    async def status(self, recent: int = 10) -> Status:
        """Counts per state; running tasks; the RECENT latest results and dead tasks; workers."""
        recent = max(recent, 0)
        with self._read() as db:
            counts = {s.value: 0 for s in State}
            counts.update(db.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
            running = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = 'running' ORDER BY started_at"
            ).fetchall()
            finished = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state IN "
                "('succeeded', 'failed', 'timed_out', 'cancelled') "
                "ORDER BY finished_at DESC, id DESC LIMIT ?", (recent,)
            ).fetchall()
            dead = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = 'dead' "
                "ORDER BY finished_at DESC, id DESC LIMIT ?", (recent,)
            ).fetchall()
            workers = db.execute(
                "SELECT worker, state, task_id, host, pid, version, tasks_done, updated_at "
                "FROM workers ORDER BY worker"
            ).fetchall()
        return Status(
            counts=counts,
            running=[self._view(r) for r in running],
            recent=[self._view(r) for r in finished],
            dead=[self._view(r) for r in dead],
            workers=[WorkerView(*w) for w in workers],
        )

    async def clear(self) -> int:
        """Delete every queued task (running ones finish); returns how many were deleted."""
        with self._errors():
            return self._db.execute("DELETE FROM tasks WHERE state = 'queued'").rowcount

    async def report_worker(self, view: WorkerView) -> None:
        """Upsert the worker's board row. ``tasks_done`` is added to the stored count: a worker
        process handles one task, so it reports 1 when done and the row keeps the total. Rows
        of workers not seen for a day (and not running a task) are dropped."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "INSERT INTO workers (worker, state, task_id, host, pid, version, tasks_done, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (worker) DO UPDATE SET "
                "state = excluded.state, task_id = excluded.task_id, host = excluded.host, "
                "pid = excluded.pid, version = excluded.version, "
                "tasks_done = workers.tasks_done + excluded.tasks_done, "
                "updated_at = excluded.updated_at",
                (view.worker, view.state, view.task_id, view.host, view.pid, view.version,
                 view.tasks_done, view.updated_at or now),
            )
            db.execute(
                "DELETE FROM workers WHERE updated_at < ? AND state != 'RUNNING'",
                (now - WORKER_ROWS_KEPT,),
            )

    async def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
