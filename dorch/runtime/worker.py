"""One worker process: poll, claim one task, run its agent, report, exit.

A worker handles at most one task and then exits 0, so systemd (or ``dorch up``) starts a fresh
process for the next one. Exit codes (``dorch.errors.ExitCode``): 0 task done or idle timeout;
75 temporary failure; 78 configuration error (the unit must not restart). SIGTERM/SIGINT
during a task stop the agent and hand the task back without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dorch import __version__, paths
from dorch.bus import Bus, BusConfigError, BusError, open_bus
from dorch.config import Config
from dorch.errors import DorchError, ExitCode
from dorch.executors import ExecRequest, Executor, make_executor
from dorch.model import Claim, Lease, Result, State, WorkerState, WorkerView, resolve_model
from dorch.runtime import notify
from dorch.runtime.pacing import PollPacer
from dorch.runtime.sandbox import Sandbox, harden_process
from dorch.runtime.sandbox import from_config as sandbox_from_config

MAX_BACKOFF = 30.0  # s between polls while the bus cannot be reached

log = logging.getLogger("dorch.worker")


def worker_id(config: Config, instance: str) -> str:
    """``[worker] id`` / ``$DORCH_WORKER_ID`` if set, else ``<host>-<instance>``."""
    return config.worker["id"] or f"{socket.gethostname()}-{instance}"


def _queue_key(config: Config) -> str:
    """Which queue a worker polls: its host's idle workers on the same one take turns."""
    if config.bus_kind == "discord":
        return f"discord:{config.discord['task_channel']}"
    return f"{config.bus_kind}:{config.local_path()}"


@dataclass
class _Outcome:
    result: Result
    reason: str  # "done" | "cancelled" | "lost" | "stopped"


class Worker:
    """The life of one worker process. ``run`` returns the process exit code.

    Leases are wall-clock times shared with other hosts: CLOCK (``time.time``) reads them; the
    idle and hard deadlines are the event loop's (monotonic) time. Tests pass a virtual clock and
    a virtual-time loop (tests/support/virtual_time.py) to run minutes of leases in milliseconds.
    """

    def __init__(self, config: Config, bus: Bus, executor: Executor, wid: str,
                 sandbox: Sandbox | None = None, agent_secrets: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.sandbox = sandbox
        self.agent_secrets = agent_secrets or {}  # [executor] secrets, for the agent's env only
        self.bus = bus
        self.executor = executor
        self.id = wid
        self.state_dir = paths.worker_state_dir(wid)
        root = config.worker["workspace_root"]
        self.workspace_root = Path(root).expanduser() if root else self.state_dir / "workspaces"
        self._stop = asyncio.Event()
        self._host = socket.gethostname()
        self._clock = clock
        self._pacer = PollPacer(paths.private_dir(), _queue_key(config), clock)

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested")
        self._stop.set()

    async def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pinger = asyncio.create_task(self._watchdog())
        try:
            await self._report(WorkerState.READY)
            notify.ready(f"{self.id}: waiting for a task")
            claim = await self._poll()
            if claim is None:
                await self._report(self._leaving())
                return ExitCode.OK
            await self._handle(claim)
            await self._report(self._leaving(), done=1)
            return ExitCode.OK
        finally:
            pinger.cancel()

    async def _poll(self) -> Claim | None:
        """Claim a task, polling every poll_interval (in turn with the host's other idle
        workers); None when idle for max_idle_time or stopped."""
        deadline = _now() + self.config.worker["max_idle_time"]
        try:
            return await self._poll_until(deadline)
        finally:
            self._pacer.leave(self.id)

    async def _poll_until(self, deadline: float) -> Claim | None:
        w = self.config.worker
        polls = failures = 0
        while not self._stop.is_set():
            polls += 1
            try:
                await self.bus.reap(w["max_attempts"])
                claim = await self.bus.claim(self.id, w["lease_seconds"])
            except BusConfigError:
                raise
            except BusError as exc:
                # The bus is down for a while (a Discord outage): a new process would not
                # fare better, so wait here, backing off, until the bus answers again.
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("the bus cannot be reached (%d poll(s) failed): %s", failures,
                                exc)
                claim = None
                if _now() >= deadline:
                    raise
            else:
                if failures:
                    log.info("the bus answers again after %d failed poll(s)", failures)
                failures = 0
            if claim is not None:
                log.info("claimed task %s (attempt %d) after %d poll(s)",
                         claim.task.id, claim.task.attempt, polls)
                return claim
            remaining = deadline - _now()
            if remaining <= 0:
                log.info("idle for %.0f s: exiting", w["max_idle_time"])
                return None
            if failures:
                # at most half a lease, so that after an outage this host's waiting results are
                # delivered before other hosts' reapers (which wait a lease) take their tasks
                cap = min(MAX_BACKOFF, w["lease_seconds"] / 2)
                backoff = min(w["poll_interval"] * 2 ** failures, cap)
                await self._sleep(min(max(w["poll_interval"], backoff) * random.uniform(0.8, 1.2),
                                      remaining))
                continue
            self._pacer.polled(self.id)
            while (wait := self._pacer.turn(self.id, w["poll_interval"])) > 0:
                remaining = deadline - _now()
                if remaining <= 0 or self._stop.is_set():
                    break
                await self._sleep(min(wait, remaining))
        return None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or less if a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _handle(self, claim: Claim) -> None:
        from dorch.redact import redact_result
        from dorch.runtime.workspace import new_workspace, prune, write_result

        task = claim.task
        w = self.config.worker
        notify.status(f"{self.id}: running task {task.id}")
        await self._report(WorkerState.RUNNING, task_id=task.id)
        workspace = new_workspace(self.workspace_root, task.id, task.attempt)
        request = ExecRequest(
            prompt=task.spec.prompt,
            model=resolve_model(task.spec.model, self.config.models),
            thinking=task.spec.thinking,
            workspace=workspace,
            timeout=w["task_timeout"],
            state_dir=self.state_dir,
            sandbox=self.sandbox,
            secrets=self.agent_secrets,
        )
        outcome = await self._supervise(claim, request)
        # Everything below (the bus: Discord posts, the local queue, the outbox; RESULT.md; logs)
        # sees the agent's output with every secret dorch knows replaced by [redacted].
        result = redact_result(outcome.result)
        if outcome.reason == "stopped":
            await self.bus.release(claim)
            log.info("task %s handed back (worker stopping)", task.id)
        elif outcome.reason == "lost":
            log.warning("task %s: lease lost to another worker; result discarded", task.id)
        else:
            if outcome.reason == "cancelled":
                result.state = State.CANCELLED
                result.error = result.error or "cancelled by request"
            if await self.bus.finish(claim, result):
                log.info("task %s %s in %.2f s", task.id, result.state.value, result.duration)
            else:
                log.warning("task %s: fenced before reporting; result discarded", task.id)
        write_result(workspace, result, task)
        prune(self.workspace_root, w["keep_workspaces"])

    async def _supervise(self, claim: Claim, request: ExecRequest) -> _Outcome:
        """Run the agent while renewing the lease; stop it on cancel, fencing or shutdown."""
        w = self.config.worker
        cancel = asyncio.Event()
        started = _now()
        # The claim may have used much of its lease (rate-limit waits, a slow Discord): renew
        # it before the agent starts once a heartbeat's worth is gone, so the lease never runs
        # out between the claim and the first heartbeat.
        renew_at = claim.lease_until - w["lease_seconds"] + w["heartbeat_seconds"]
        if self._clock() >= renew_at:
            lease = await self._heartbeat(claim)
            renew_at = self._clock() + w["heartbeat_seconds"]
            if lease is not Lease.HELD:
                log.info("task %s: %s before its agent started", claim.task.id, lease.value)
                reason = "lost" if lease is Lease.LOST else "cancelled"
                return _Outcome(Result(State.CANCELLED, error="cancelled before it started"),
                                reason)
        run = asyncio.create_task(self.executor.run(request, cancel))
        stop_wait = asyncio.create_task(self._stop.wait())
        reason = "done"
        # Safety net: the executor enforces the task timeout; this catches an executor that hangs.
        hard_deadline = started + (w["task_timeout"] or float("inf")) + w["stop_grace"] + 60
        try:
            while not run.done():
                due = max(renew_at - self._clock(), 0) if reason == "done" else w["heartbeat_seconds"]
                timeout = min(due, max(hard_deadline - _now(), 0))
                done, _ = await asyncio.wait(
                    {run, stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if run in done:
                    break
                if stop_wait in done and reason == "done":
                    reason = "stopped"
                    cancel.set()
                    continue
                if _now() >= hard_deadline and not cancel.is_set():
                    log.error("task %s: executor did not stop at its timeout; cancelling",
                              claim.task.id)
                    cancel.set()
                    continue
                if reason != "done":
                    continue
                lease = await self._heartbeat(claim)
                renew_at = self._clock() + w["heartbeat_seconds"]
                if lease is Lease.CANCELLED:
                    log.info("task %s: cancelled by request", claim.task.id)
                    reason = "cancelled"
                    cancel.set()
                elif lease is Lease.LOST:
                    reason = "lost"
                    cancel.set()
            result = await run
        finally:
            stop_wait.cancel()
            if not run.done():
                run.cancel()
        result.duration = result.duration or _now() - started
        return _Outcome(result, reason)

    async def _heartbeat(self, claim: Claim) -> Lease:
        try:
            return await self.bus.heartbeat(claim, self.config.worker["lease_seconds"])
        except BusError as exc:
            # A transient bus failure must not kill the agent: the lease decides, later.
            log.warning("heartbeat for task %s failed: %s", claim.task.id, exc)
            return Lease.HELD

    def _leaving(self) -> WorkerState:
        return WorkerState.STOPPED if self._stop.is_set() else WorkerState.RESTARTING

    async def _report(self, state: WorkerState, task_id: str = "", done: int = 0) -> None:
        view = WorkerView(
            worker=self.id, state=state, task_id=task_id, host=self._host, pid=os.getpid(),
            version=__version__, tasks_done=done, updated_at=self._clock(),
        )
        try:
            await self.bus.report_worker(view)
        except BusError as exc:
            log.warning("could not update the worker board: %s", exc)

    async def _watchdog(self) -> None:
        interval = notify.watchdog_interval()
        if interval is None:
            return
        while True:
            notify.watchdog()
            await asyncio.sleep(interval)


def _now() -> float:
    """The event loop's monotonic time (``time.monotonic`` unless a test's loop is virtual)."""
    return asyncio.get_running_loop().time()


async def _main(config: Config, instance: str) -> int:
    from dorch.runtime import agent_secrets

    wid = worker_id(config, instance)
    secrets = agent_secrets.load(config)  # a missing one: exit 78 before any task is claimed
    bus = open_bus(config)
    try:
        sandbox = sandbox_from_config(config)
        log.info("agent isolation: %s", sandbox.describe())
        executor = make_executor(config)
        worker = Worker(config, bus, executor, wid, sandbox, secrets)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        return await worker.run()
    finally:
        notify.stopping()
        await bus.close()


def run_worker(config: Config, instance: str | None = None) -> int:
    """Entry point of ``dorch worker``: returns the exit code (never raises for expected errors)."""
    from dorch import log as dlog

    inst = instance or str(os.getpid())
    dlog.setup(config.worker["log_level"], name=f"worker[{worker_id(config, inst)}]")
    # The agent must not read this process's /proc entries (its environment, its memory), and
    # whatever the agent leaves behind is reparented here, to be killed after the task.
    harden_process(subreaper=True)
    try:
        return asyncio.run(_main(config, inst))
    except DorchError as exc:
        code = exc.exit_code
        log.error("%s (exit %d): %s", "configuration error" if code == ExitCode.CONFIG else "error",
                  code, exc)
        return code
    except KeyboardInterrupt:
        return ExitCode.OK
