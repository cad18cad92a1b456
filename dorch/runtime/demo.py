"""``dorch demo``: the whole system on one machine, with nothing configured.

A temporary local queue, N workers under the ``dorch up`` supervisor (a fresh process per task),
a handful of tasks with inline tags, their results as they arrive (which worker ran each and how
long it took), and a clean stop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dorch import config as dconfig
from dorch.bus.local import LocalBus
from dorch.model import State, TaskView, parse_task
from dorch.runtime.supervisor import Supervisor

PROMPTS = [
    "Write a sort function [model:gpt-4o] [thinking:medium]",
    "Summarise the design of dorch in one sentence",
    "[thinking:low] List three prime numbers",
    "Explain why a claim must be a compare-and-set",
    "Translate 'bonjour' to English [model:cheap]",
    "Name a sorting algorithm with O(n log n) worst case",
    "Say hello from a fresh process",
    "Count to five",
]

_CONFIG = """\
[bus]
kind = "local"

[local]
path = "{root}/queue.sqlite3"

[executor]
kind = "echo"

[executor.echo]
delay = {delay}

[worker]
poll_interval = 0.2
max_idle_time = 120
heartbeat_seconds = 1
lease_seconds = 10
workspace_root = "{root}/workspaces"
log_level = "warning"

[models]
cheap = "openrouter/some-cheap-model"
"""


async def run_demo(workers: int, tasks: int, delay: float, echo: Callable[[str], None]) -> int:
    root = Path(tempfile.mkdtemp(prefix="dorch-demo-"))
    cfg_file = root / "config.toml"
    cfg_file.write_text(_CONFIG.format(root=root.as_posix(), delay=delay))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORCH_")}
    env["DORCH_DATA_DIR"] = str(root)
    cfg = dconfig.load(cfg_file)
    bus = LocalBus(cfg.local_path(), max_attempts=cfg.worker["max_attempts"])
    sup = Supervisor(workers, str(cfg_file), stop_timeout=15, env=env, on_event=echo)
    running = asyncio.create_task(sup.run())
    started = time.monotonic()
    try:
        ids = []
        for i in range(tasks):
            ids.append(await bus.submit(parse_task(PROMPTS[i % len(PROMPTS)]), "demo"))
        echo(f"dorch demo: {tasks} tasks queued on a local SQLite bus; "
             f"{workers} workers, one fresh process per task\n")
        echo(f"{'TASK':>4}  {'STATE':<9} {'WORKER':<22} {'TOOK':>6}  RESULT")
        views = await _collect(bus, ids, echo, deadline=started + 60 + tasks * delay * 2)
    finally:
        sup.stop()
        await running
        await bus.close()
    elapsed = time.monotonic() - started
    done = sum(1 for v in views if v.state is State.SUCCEEDED)
    starts = ", ".join(f"worker {i.number}: {i.starts}" for i in sup.instances)
    echo(f"\n{done}/{tasks} tasks succeeded in {elapsed:.1f} s. "
         f"Worker processes started per instance ({starts}).")
    echo("All workers stopped cleanly.")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if done == tasks else 1


async def _collect(
    bus: LocalBus, ids: list[str], echo: Callable[[str], None], deadline: float
) -> list[TaskView]:
    pending = list(ids)
    finished: list[TaskView] = []
    while pending:
        if time.monotonic() > deadline:
            echo(f"gave up waiting for tasks {', '.join(pending)}")
            break
        for task_id in list(pending):
            view = await bus.get(task_id)
            if view is None or not view.state.finished:
                continue
            pending.remove(task_id)
            finished.append(view)
            took = f"{view.result.duration:.2f}s" if view.result else "-"
            out = view.result.output if view.result else ""
            line = " ".join(out.split())
            echo(f"{view.task.id:>4}  {view.state.value:<9} {view.worker:<22} {took:>6}  "
                 f"{line[:60]}")
        await asyncio.sleep(0.1)
    return finished
