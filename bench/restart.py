"""The per-task restart: what a fresh worker process costs, on the local and the Discord bus.

    python bench/restart.py [--runs 10]

A worker exits after every task and systemd (or ``dorch up``) starts a new one, so these costs
are paid once per task. Measured on real ``dorch worker`` processes, each with its own
``$NOTIFY_SOCKET`` (the READY=1 datagram marks the end of start-up, as for systemd):

- process start -> READY, and -> first poll (Discord: the emulator's log of the first
  ``GET #task-queue``; local: READY is sent just before the first poll);
- task reported -> process exit (the board's last edit is flushed first), and exit -> the next
  process's READY (no restart delay added: systemd adds ``RestartSec``, 500 ms in our unit;
  ``dorch up`` 100 ms);
- idle RSS: VmRSS of a worker waiting for tasks.

The Discord worker reads its token from ``$CREDENTIALS_DIRECTORY``, as under systemd (a keyring
lookup, the desktop's way, adds about 0.1 s and 8 MB).
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    default_worker_settings,
    discord_world,
    heading,
    snowflake_time,
    table,
    wait_for,
    write_json,
)

from dorch.model import TaskSpec
from tests.support.helpers import DORCH, DorchHome

TASK_POLL = "GET /channels/{channel_id}/messages"


class Notified:
    """A NOTIFY_SOCKET that remembers when each READY=1 arrived."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(30)

    def ready(self) -> float:
        while True:
            data = self.sock.recv(4096)
            if b"READY=1" in data:
                return time.perf_counter()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn(env: dict[str, str], notified: Notified, instance: str) -> tuple[subprocess.Popen[bytes], float]:
    env = {**env, "NOTIFY_SOCKET": str(notified.path)}
    started = time.perf_counter()
    proc = subprocess.Popen([DORCH, "worker", "--instance", instance], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, started


def local_runs(runs: int, tmp: Path) -> dict[str, list[float]]:
    home = DorchHome(tmp / "local")
    home.root.mkdir()
    home.configure(worker=default_worker_settings())
    notified = Notified(home.root)
    out: dict[str, list[float]] = {"start_ready": [], "rss": [], "exit_next_ready": []}
    try:
        for _ in range(runs):
            proc, started = spawn(home.env(), notified, "1")
            out["start_ready"].append(notified.ready() - started)
            time.sleep(0.5)  # idle, waiting for its next poll: the memory it keeps
            out["rss"].append(rss_mb(proc.pid))
            stop(proc)
        for _ in range(runs):  # a task is waiting: claim, run (echo), report, exit, next READY
            home.call("submit", TaskSpec("hi"))
            proc, _ = spawn(home.env(), notified, "1")
            notified.ready()
            proc.wait(30)
            exited = time.perf_counter()
            nxt, _ = spawn(home.env(), notified, "1")
            out["exit_next_ready"].append(notified.ready() - exited)
            stop(nxt)
    finally:
        notified.close()
    return out


def discord_runs(runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start_ready": [], "start_poll": [], "rss": [],
                                   "report_exit": [], "exit_next_ready": []}
    with discord_world(worker=default_worker_settings(), executor={"kind": "echo"}) as world:
        notified = Notified(world.root)
        credentials = world.root / "credentials"  # as systemd's LoadCredentialEncrypted= gives it
        credentials.mkdir()
        (credentials / "discord-token").write_text(world.token("worker-1"))
        env = world.home.env(CREDENTIALS_DIRECTORY=str(credentials))
        queue = str(world.channel("task-queue"))
        try:
            warm, _ = spawn(env, notified, "1")  # the host's first worker checks permissions
            notified.ready()
            wait_for(lambda: polls_since(world, queue, 0), 30, "a first poll")
            stop(warm)
            for _ in range(runs):
                mark = len(world.emu.requests)
                wall = time.time()
                proc, started = spawn(env, notified, "1")
                out["start_ready"].append(notified.ready() - started)
                first = wait_for(lambda m=mark: polls_since(world, queue, m), 30, "the first poll")
                out["start_poll"].append(first[0].time - wall)
                time.sleep(0.5)
                out["rss"].append(rss_mb(proc.pid))
                stop(proc)
            for n in range(runs):
                task = world.post(f"restart task {n}")
                proc, _ = spawn(env, notified, "1")
                notified.ready()
                proc.wait(60)
                exited = time.perf_counter()
                exited_wall = time.time()
                nxt, _ = spawn(env, notified, "1")
                out["exit_next_ready"].append(notified.ready() - exited)
                summary = next(m for m in reversed(world.messages("results")) if task in m["content"])
                out["report_exit"].append(exited_wall - snowflake_time(summary["id"]))
                stop(nxt)
        finally:
            notified.close()
    return out


def polls_since(world: Any, queue: str, mark: int) -> list[Any]:
    return [r for r in world.emu.requests[mark:] if r.route == TASK_POLL
            and r.path.split("/")[2] == queue and r.status == 200]


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    heading(f"per-task restart: medians of {args.runs} runs")
    with tempfile.TemporaryDirectory(prefix="dorch-bench-") as tmp:
        local = local_runs(args.runs, Path(tmp))
    discord = discord_runs(args.runs)
    rows = [
        ["start -> READY (ms)", median_ms(local["start_ready"]), median_ms(discord["start_ready"]), "-"],
        ["start -> first poll (ms)", median_ms(local["start_ready"]), median_ms(discord["start_poll"]),
         "<= 300"],
        ["task reported -> exit (ms)", "-", median_ms(discord["report_exit"]), "-"],
        ["exit -> next READY (ms)", median_ms(local["exit_next_ready"]),
         median_ms(discord["exit_next_ready"]), "-"],
        ["idle RSS (MB)", statistics.median(local["rss"]), statistics.median(discord["rss"]), "<= 40"],
    ]
    print(table(["figure", "local bus", "Discord bus", "target"], rows))
    print("exit -> next READY adds no restart delay; systemd adds RestartSec (500 ms in "
          "dorch-worker@.service), dorch up 100 ms.")
    write_json("restart", {"runs": args.runs, "local": local, "discord": discord,
                           "medians_ms": {r[0]: r[1:3] for r in rows}})


if __name__ == "__main__":
    main()
