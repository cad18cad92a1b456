"""``dorch up``: keep N worker processes running in the foreground, as systemd would.

Each worker exits after one task; the supervisor starts a fresh one at once. Repeated failures
(non-zero exits in quick succession) back off exponentially; exit 78 (configuration error) is
never restarted. SIGTERM/SIGINT stop every worker gracefully, so their tasks are handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dorch.errors import ExitCode

log = logging.getLogger("dorch.supervisor")

RESTART_DELAY = 0.1        # like systemd's default RestartSec
MAX_BACKOFF = 30.0
HEALTHY_RUN = 10.0         # a run this long resets the failure backoff


@dataclass
class Instance:
    number: int
    starts: int = 0
    failures: int = 0       # consecutive non-zero exits
    last_exit: int | None = None
    given_up: bool = False
    process: asyncio.subprocess.Process | None = None
    exits: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        workers: int,
        config_path: str | None = None,
        stop_timeout: float = 30.0,
        env: dict[str, str] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.instances = [Instance(n) for n in range(1, workers + 1)]
        self.config_path = config_path
        self.stop_timeout = stop_timeout
        self.env = env
        self.on_event = on_event or (lambda text: log.info("%s", text))
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _argv(self, inst: Instance) -> list[str]:
        argv = [sys.executable, "-m", "dorch", "worker", "--instance", str(inst.number)]
        if self.config_path:
            argv += ["--config", self.config_path]
        return argv

    async def run(self) -> int:
        """Run until stopped, or until every instance gave up; returns the exit code."""
        await asyncio.gather(*(self._keep(inst) for inst in self.instances))
        if all(inst.given_up for inst in self.instances):
            return ExitCode.CONFIG
        return ExitCode.OK

    async def _keep(self, inst: Instance) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            inst.starts += 1
            inst.process = await asyncio.create_subprocess_exec(*self._argv(inst), env=self.env)
            code = await self._wait(inst.process)
            inst.process = None
            inst.last_exit = code
            inst.exits.append(code)
            if self._stopping.is_set():
                return
            if code == ExitCode.CONFIG:
                inst.given_up = True
                self.on_event(f"worker {inst.number} exited 78 (configuration error): not restarted")
                return
            if code == 0:
                inst.failures = 0
                delay = RESTART_DELAY
            else:
                healthy = time.monotonic() - started >= HEALTHY_RUN
                inst.failures = 1 if healthy else inst.failures + 1
                delay = min(RESTART_DELAY * 2 ** (inst.failures + 3), MAX_BACKOFF)
                self.on_event(f"worker {inst.number} exited {code}: restarting in {delay:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        """Wait for the worker; on stop, SIGTERM it and SIGKILL after the stop timeout."""
        stop = asyncio.create_task(self._stopping.wait())
        done = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(done), self.stop_timeout)
                except TimeoutError:
                    log.warning("worker pid %d did not stop in %.0f s: killing",
                                proc.pid, self.stop_timeout)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            return await done
        finally:
            stop.cancel()


def pidfile_path(data_dir: Path) -> Path:
    return data_dir / "up.pid"


async def supervise(
    workers: int, config_path: str | None, pidfile: Path, stop_timeout: float
) -> int:
    """``dorch up`` in the foreground: write the pidfile, handle signals, run."""
    from dorch.runtime.sandbox import harden_process

    harden_process()   # its /proc entries (environment, memory) stay unreadable to agents
    sup = Supervisor(workers, config_path, stop_timeout=stop_timeout)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.stop)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return await sup.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
