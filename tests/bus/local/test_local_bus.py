"""The local bus on a real SQLite file: lifecycle, fencing, leases, cancel, status, schema, text.

Lease expiry is driven by an injected clock, so no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dorch.bus import BusConfigError
from dorch.bus.local import SCHEMA_VERSION, LocalBus
from dorch.model import Lease, Result, State, TaskError, TaskSpec, WorkerView

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.sqlite3"


@pytest.fixture
def bus(queue: Path, clock: Clock) -> Iterator[LocalBus]:
    b = LocalBus(queue, max_attempts=3, clock=clock)
    yield b
    run(b.close())


def submit(bus: LocalBus, prompt: str = "do it", **kw: Any) -> str:
    return run(bus.submit(TaskSpec(prompt, **kw), submitter="tester"))


def state_of(bus: LocalBus, task_id: str) -> State | None:
    view = run(bus.get(task_id))
    return None if view is None else view.state


# -- lifecycle --------------------------------------------------------------------------------


def test_submit_claim_finish(bus: LocalBus, clock: Clock, queue: Path) -> None:
    tid = submit(bus, "write a sort", model="openai/gpt-4o", thinking="low")
    assert tid.isdigit()
    view = run(bus.get(tid))
    assert view is not None and view.state is State.QUEUED and view.result is None
    assert view.task.submitter == "tester" and view.task.submitted_at == clock.now

    claim = run(bus.claim("w1", 30))
    assert claim is not None
    assert claim.task.id == tid and claim.task.attempt == 1 and claim.worker == "w1"
    assert claim.task.spec == TaskSpec("write a sort", "openai/gpt-4o", "low")
    assert claim.lease_until == clock.now + 30
    running = run(bus.get(tid))
    assert running is not None and running.state is State.RUNNING
    assert running.worker == "w1" and running.started_at == clock.now

    clock.now += 5
    result = Result(State.SUCCEEDED, output="done", stderr_tail="warn", duration=4.5,
                    usage={"tokens": 12, "model": "gpt"})
    assert run(bus.finish(claim, result)) is True
    final = run(bus.get(tid))
    assert final is not None and final.state is State.SUCCEEDED
    assert final.finished_at == clock.now and final.worker == "w1"
    assert final.result == result
    assert [(a.attempt, a.worker, a.outcome, a.state) for a in bus.history(tid)] == [
        (1, "w1", "finished", "succeeded")
    ]
    assert run(bus.claim("w2", 30)) is None


def test_ids_are_increasing_and_claims_go_oldest_first(bus: LocalBus) -> None:
    ids = [submit(bus, f"task {i}") for i in range(5)]
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    claimed = []
    while (claim := run(bus.claim("w", 30))) is not None:
        claimed.append(claim.task.id)
    assert claimed == ids


def test_failed_and_timed_out_results_are_kept(bus: LocalBus) -> None:
    for state in (State.FAILED, State.TIMED_OUT):
        tid = submit(bus)
        claim = run(bus.claim("w", 30))
        assert claim is not None
        assert run(bus.finish(claim, Result(state, error=f"it {state.value}")))
        view = run(bus.get(tid))
        assert view is not None and view.state is state and view.result is not None
        assert view.result.error == f"it {state.value}"


def test_finish_needs_a_final_state(bus: LocalBus) -> None:
    submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    with pytest.raises(ValueError, match="final state"):
        run(bus.finish(claim, Result(State.RUNNING)))


def test_submit_rejects_what_a_worker_cannot_run(bus: LocalBus) -> None:
    with pytest.raises(TaskError, match="empty"):
        submit(bus, "   ")
    with pytest.raises(TaskError, match="NUL"):
        submit(bus, "a\x00b")
    assert run(bus.status()).counts["queued"] == 0


# -- fencing and leases ------------------------------------------------------------------------


def test_a_reaped_claim_is_fenced(bus: LocalBus, clock: Clock) -> None:
    tid = submit(bus)
    old = run(bus.claim("w1", 30))
    assert old is not None
    clock.now += 31
    assert run(bus.reap(3)) == 1
    view = run(bus.get(tid))
    assert view is not None and view.state is State.QUEUED and view.task.attempt == 2
    assert view.worker == "" and view.started_at is None

    new = run(bus.claim("w2", 30))
    assert new is not None and new.task.id == tid and new.task.attempt == 2
    assert new.token != old.token
    # the old holder learns it lost the task and can change nothing
    assert run(bus.heartbeat(old, 30)) is Lease.LOST
    assert run(bus.finish(old, Result(State.SUCCEEDED, output="late"))) is False
    run(bus.release(old))
    view = run(bus.get(tid))
    assert view is not None and view.state is State.RUNNING and view.worker == "w2"

    assert run(bus.heartbeat(new, 30)) is Lease.HELD
    assert run(bus.finish(new, Result(State.SUCCEEDED, output="on time")))
    view = run(bus.get(tid))
    assert view is not None and view.result is not None and view.result.output == "on time"
    assert [(a.attempt, a.worker, a.outcome) for a in bus.history(tid)] == [
        (1, "w1", "lost"), (2, "w2", "finished")
    ]


def test_a_task_is_finished_once(bus: LocalBus) -> None:
    tid = submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    assert run(bus.finish(claim, Result(State.SUCCEEDED, output="first")))
    assert run(bus.finish(claim, Result(State.FAILED, output="second"))) is False
    assert run(bus.heartbeat(claim, 30)) is Lease.LOST
    view = run(bus.get(tid))
    assert view is not None and view.state is State.SUCCEEDED
    assert view.result is not None and view.result.output == "first"


def test_heartbeat_extends_the_lease(bus: LocalBus, clock: Clock) -> None:
    tid = submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    for _ in range(3):
        clock.now += 20
        assert run(bus.heartbeat(claim, 30)) is Lease.HELD
        assert run(bus.reap(3)) == 0
    clock.now += 30  # the lease ends exactly now: not yet expired
    assert run(bus.reap(3)) == 0
    clock.now += 0.001
    assert run(bus.reap(3)) == 1
    view = run(bus.get(tid))
    assert view is not None and view.state is State.QUEUED


def test_reap_requeues_then_gives_up_after_max_attempts(bus: LocalBus, clock: Clock) -> None:
    tid = submit(bus)
    for attempt in (1, 2, 3):
        claim = run(bus.claim(f"w{attempt}", 10))
        assert claim is not None and claim.task.attempt == attempt
        clock.now += 11
        assert run(bus.reap(3)) == 1
        assert run(bus.reap(3)) == 0  # each expired lease is reaped once
    view = run(bus.get(tid))
    assert view is not None and view.state is State.DEAD and view.task.attempt == 3
    assert view.result is not None and "attempt 3 of 3" in view.result.error
    assert view.worker == "w3" and view.finished_at == clock.now
    assert run(bus.claim("w4", 10)) is None
    status = run(bus.status())
    assert status.counts["dead"] == 1 and [v.task.id for v in status.dead] == [tid]
    assert [(a.attempt, a.outcome, a.state) for a in bus.history(tid)] == [
        (1, "lost", "queued"), (2, "lost", "queued"), (3, "lost", "dead")
    ]


def test_reap_defaults_to_the_configured_max_attempts(queue: Path, clock: Clock) -> None:
    bus = LocalBus(queue, max_attempts=1, clock=clock)
    tid = submit(bus)
    assert run(bus.claim("w", 10)) is not None
    clock.now += 11
    assert run(bus.reap()) == 1
    view = run(bus.get(tid))
    assert view is not None and view.state is State.DEAD
    run(bus.close())


def test_reap_only_touches_expired_leases(bus: LocalBus, clock: Clock) -> None:
    short, long_ = submit(bus, "short"), submit(bus, "long")
    assert run(bus.claim("a", 10)) is not None
    assert run(bus.claim("b", 100)) is not None
    clock.now += 50
    assert run(bus.reap(3)) == 1
    assert state_of(bus, short) is State.QUEUED
    assert state_of(bus, long_) is State.RUNNING


def test_release_hands_back_without_spending_an_attempt(bus: LocalBus) -> None:
    tid = submit(bus)
    first = run(bus.claim("w1", 30))
    assert first is not None
    run(bus.release(first))
    view = run(bus.get(tid))
    assert view is not None and view.state is State.QUEUED and view.task.attempt == 1
    assert view.worker == "" and view.started_at is None
    second = run(bus.claim("w2", 30))
    assert second is not None and second.task.attempt == 1
    run(bus.release(first))  # stale: changes nothing
    assert run(bus.heartbeat(second, 30)) is Lease.HELD
    assert [(a.attempt, a.worker, a.outcome, a.state) for a in bus.history(tid)] == [
        (1, "w1", "released", "queued")
    ]


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_a_queued_task(bus: LocalBus) -> None:
    tid = submit(bus)
    assert run(bus.cancel(tid)) is True
    view = run(bus.get(tid))
    assert view is not None and view.state is State.CANCELLED
    assert view.result is not None and view.result.state is State.CANCELLED
    assert run(bus.claim("w", 30)) is None
    assert run(bus.cancel(tid)) is False  # already finished


def test_cancel_a_running_task(bus: LocalBus) -> None:
    tid = submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    assert run(bus.cancel(tid)) is True
    view = run(bus.get(tid))
    assert view is not None and view.state is State.RUNNING  # until the worker stops its agent
    assert run(bus.heartbeat(claim, 30)) is Lease.CANCELLED
    assert run(bus.finish(claim, Result(State.CANCELLED, output="partial", error="cancelled")))
    view = run(bus.get(tid))
    assert view is not None and view.state is State.CANCELLED
    assert view.result is not None and view.result.output == "partial"
    assert run(bus.cancel(tid)) is False


def test_cancel_finished_and_unknown_tasks(bus: LocalBus) -> None:
    tid = submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    run(bus.finish(claim, Result(State.SUCCEEDED)))
    assert run(bus.cancel(tid)) is False
    for bad in ("999", "abc", "", "-1", "1.0", "١"):
        assert run(bus.cancel(bad)) is False
        assert run(bus.get(bad)) is None
    view = run(bus.get(tid))
    assert view is not None and view.state is State.SUCCEEDED


def test_a_cancelled_task_is_not_requeued(bus: LocalBus, clock: Clock) -> None:
    """Cancel asked, then the worker died or was stopped: the task ends cancelled, not rerun."""
    lost, stopped = submit(bus, "lost"), submit(bus, "stopped")
    claim_lost = run(bus.claim("w1", 10))
    claim_stopped = run(bus.claim("w2", 100))
    assert claim_lost is not None and claim_stopped is not None
    assert run(bus.cancel(lost)) and run(bus.cancel(stopped))
    run(bus.release(claim_stopped))
    clock.now += 11
    assert run(bus.reap(3)) == 1
    for tid in (lost, stopped):
        view = run(bus.get(tid))
        assert view is not None and view.state is State.CANCELLED
    assert run(bus.claim("w3", 10)) is None


# -- clear, status, workers -----------------------------------------------------------------------


def test_clear_deletes_only_queued_tasks(bus: LocalBus) -> None:
    done, running = submit(bus), submit(bus)
    queued = [submit(bus) for _ in range(3)]
    claim = run(bus.claim("w", 30))
    assert claim is not None and claim.task.id == done
    run(bus.finish(claim, Result(State.SUCCEEDED)))
    assert run(bus.claim("w", 30)) is not None
    handed_back = run(bus.claim("w", 30))
    assert handed_back is not None and handed_back.task.id == queued[0]
    run(bus.release(handed_back))  # queued again, with an attempt history
    assert run(bus.clear()) == 3
    assert [state_of(bus, t) for t in queued] == [None, None, None]
    assert bus.history(queued[0]) == []
    assert state_of(bus, done) is State.SUCCEEDED and state_of(bus, running) is State.RUNNING
    assert run(bus.clear()) == 0


def test_task_ids_are_never_reused(bus: LocalBus) -> None:
    """An id printed by `dorch submit` must never name another task later, even after clear."""
    first = [submit(bus) for _ in range(3)]
    assert run(bus.clear()) == 3
    later = submit(bus)
    assert int(later) > max(int(t) for t in first)


def test_status(bus: LocalBus, clock: Clock) -> None:
    ids = [submit(bus, f"task {i}") for i in range(6)]
    for i, state in enumerate((State.SUCCEEDED, State.FAILED, State.SUCCEEDED)):
        claim = run(bus.claim(f"w{i}", 30))
        assert claim is not None
        clock.now += 1
        run(bus.finish(claim, Result(state, duration=1.0)))
    assert run(bus.claim("runner", 30)) is not None
    status = run(bus.status(recent=2))
    assert status.counts == {
        "queued": 2, "running": 1, "succeeded": 2, "failed": 1, "timed_out": 0,
        "cancelled": 0, "dead": 0,
    }
    assert [(v.task.id, v.worker, v.started_at) for v in status.running] == [
        (ids[3], "runner", clock.now)
    ]
    assert [v.task.id for v in status.recent] == [ids[2], ids[1]]  # newest first, limited
    assert status.dead == [] and status.workers == []


def test_worker_board(bus: LocalBus, clock: Clock) -> None:
    def report(state: str, task_id: str = "", done: int = 0, worker: str = "host-1") -> None:
        run(bus.report_worker(WorkerView(worker, state, task_id, "host", 42, "1.0", done,
                                         clock.now)))

    report("READY")
    report("RUNNING", "7")
    report("RESTARTING", done=1)
    report("READY")
    report("RESTARTING", done=1)
    report("READY")
    report("READY", worker="host-2")
    workers = run(bus.status()).workers
    assert [(w.worker, w.state, w.task_id, w.tasks_done) for w in workers] == [
        ("host-1", "READY", "", 2), ("host-2", "READY", "", 0)
    ]
    clock.now += 2 * 86400
    report("RUNNING", "9", worker="host-3")
    assert [w.worker for w in run(bus.status()).workers] == ["host-3"]


# -- schema and file -------------------------------------------------------------------------------


def test_the_file_carries_the_schema_version_and_uses_wal(bus: LocalBus, queue: Path) -> None:
    submit(bus, "kept")
    with sqlite3.connect(queue) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = LocalBus(queue)
    assert run(again.status()).counts["queued"] == 1
    run(again.close())


def test_a_newer_schema_is_refused(queue: Path) -> None:
    run(LocalBus(queue).close())
    with sqlite3.connect(queue) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(BusConfigError, match=r"schema version \d+.*upgrade dorch") as err:
        LocalBus(queue)
    assert err.value.exit_code == 78


def test_a_file_that_is_not_a_queue_is_refused(queue: Path) -> None:
    queue.parent.mkdir(parents=True)
    queue.write_text("just some text, long enough to be read as a header " * 20)
    with pytest.raises(BusConfigError, match="not a dorch queue"):
        LocalBus(queue)


def test_a_path_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BusConfigError, match=r"cannot create the local queue.*\[local\] path"):
        LocalBus(tmp_path / "file" / "queue.sqlite3")


def test_a_private_queue_file_is_private(queue: Path) -> None:
    run(LocalBus(queue).close())
    assert queue.stat().st_mode & 0o777 == 0o600


# -- text -----------------------------------------------------------------------------------------

ODD_TEXT = (
    "naïve café — 日本語のテキスト 🎉👩‍👩‍👧 e\u0301 \u200b zero-width\r\n"
    "CRLF line\rCR only\n\ttab  trailing spaces   \n```python\nprint('`x`')\n```\n"
    "[model:not-a-tag-inside-code] 'quotes' \"double\" \\backslash\\ \U0010fffd\n\n\n"
)


def test_big_and_unusual_text_round_trips_exactly(queue: Path) -> None:
    prompt = ODD_TEXT * 20_000  # about 2.5 MB
    output = "ünïcödé output ✓\n" * 500_000  # about 9 MB
    bus = LocalBus(queue)
    tid = run(bus.submit(TaskSpec(prompt, "openai/gpt-4o", "high"), submitter="Zoë 🧪"))
    claim = run(bus.claim("wörker-1", 30))
    assert claim is not None and claim.task.spec.prompt == prompt
    result = Result(State.SUCCEEDED, output=output, error=ODD_TEXT, stderr_tail=ODD_TEXT[::-1],
                    duration=1.25, usage={"note": ODD_TEXT, "tokens": [1, 2, 3]})
    assert run(bus.finish(claim, result))
    run(bus.close())

    reopened = LocalBus(queue)  # a fresh connection reads what is on disk
    view = run(reopened.get(tid))
    assert view is not None
    assert view.task.spec.prompt == prompt and view.task.submitter == "Zoë 🧪"
    assert view.worker == "wörker-1"
    assert view.result == result
    run(reopened.close())


def test_undecodable_agent_output_is_stored_not_a_crash(bus: LocalBus) -> None:
    tid = submit(bus)
    claim = run(bus.claim("w", 30))
    assert claim is not None
    raw = b"ok \xff\xfe end".decode("utf-8", "surrogateescape")
    assert run(bus.finish(claim, Result(State.SUCCEEDED, output=raw)))
    view = run(bus.get(tid))
    assert view is not None and view.result is not None
    assert view.result.output.startswith("ok ") and view.result.output.endswith(" end")
