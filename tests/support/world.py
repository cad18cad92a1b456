"""A Discord world for tests and benchmarks: the emulator, a dorch home configured for it, and
fleets of real worker processes.

- ``World``: the emulator (default guild: #task-queue, #results, #worker-pool; bots worker-1..4
  and submitter; alice (role dorch-submitter) and bob (no role)) and a ``DorchHome`` whose config
  points dorch at it, runs tasks with the recording agent (every execution is a line in
  ``world.executions_log``), and trusts every bot and the role.
- ``World.fleet(n)``: N real ``dorch worker`` processes spread over the four worker bots (and
  over ``hosts`` data dirs), restarted after every exit like systemd would (except 78),
  stopped at the end.
"""


from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dorch_emulator import Emulator, EmulatorConfig
from dorch_emulator.config import DEFAULT

from tests.support.helpers import DORCH, DorchHome, agent_command, wait_until

WORKER_BOTS = ("worker-1", "worker-2", "worker-3", "worker-4")
TOKEN_ENV = "DORCH_SECRET_DISCORD_TOKEN"


# A cheap look at emulator state, polled with a deadline (interval=0.25 for costlier looks).
eventually = wait_until


class Fleet:
    """Worker processes restarted after each exit (as systemd's Restart=always with
    RestartPreventExitStatus=78), each instance on a fixed bot token."""

    def __init__(self, world: World, count: int, bots: tuple[str, ...] = WORKER_BOTS,
                 env: dict[str, str] | None = None, hosts: int = 1) -> None:
        self.world = world
        self.count = count
        self.bots = bots
        self.env = env or {}
        self.hosts = hosts
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.exits: list[tuple[int, int]] = []
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self.logdir = world.root / "worker-logs"
        self.logdir.mkdir(exist_ok=True)

    def token(self, instance: int) -> str:
        return self.world.emu.config.bot(self.bots[instance % len(self.bots)]).token

    def data_dir(self, instance: int) -> Path:
        """Each "host" has its own data dir: its own outbox, cursor and rate-limit state,
        shared by its workers, as on separate machines. A token stays on one host (the README:
        one bot per host), since hosts cannot share what they learn of its rate limits."""
        return self.world.root / f"host-{(instance % len(self.bots)) % self.hosts}"

    def credentials(self, instance: int) -> Path:
        """The instance's token as systemd hands it over (``$CREDENTIALS_DIRECTORY``)."""
        bot = self.bots[instance % len(self.bots)]
        directory = self.world.root / "credentials" / bot
        if not directory.exists():
            directory.mkdir(parents=True)
            (directory / "discord-token").write_text(self.token(instance))
        return directory

    def _spawn(self, instance: int) -> None:
        env = self.world.home.env(CREDENTIALS_DIRECTORY=str(self.credentials(instance)),
                                  **self.env)
        if self.hosts > 1:
            env["DORCH_DATA_DIR"] = str(self.data_dir(instance))
        with (self.logdir / f"worker-{instance}.log").open("ab") as out:
            self.procs[instance] = subprocess.Popen(
                [DORCH, "worker", "--instance", str(instance)], env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    def start(self) -> Fleet:
        with self._lock:
            for i in range(self.count):
                self._spawn(i)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                for i, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    self.exits.append((i, code))
                    del self.procs[i]
                    if code != 78 and not self._stopping.is_set():
                        self._spawn(i)
            self._stopping.wait(0.05)

    def kill_random(self, rng: random.Random) -> int | None:
        """SIGKILL one running worker (its agent is left to finish on its own)."""
        with self._lock:
            alive = [p for p in self.procs.values() if p.poll() is None]
            if not alive:
                return None
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            return victim.pid

    def running(self) -> int:
        with self._lock:
            return sum(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for proc in self.procs.values():
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))


@dataclass
class World:
    emu: Emulator
    home: DorchHome
    root: Path
    fleets: list[Fleet] = field(default_factory=list)

    @property
    def executions_log(self) -> Path:
        return self.root / "executions.jsonl"

    def channel(self, name: str) -> int:
        return self.emu.config.channel(name).id

    def bot_id(self, name: str) -> int:
        return self.emu.config.bot(name).id

    def user_id(self, name: str) -> int:
        return self.emu.config.member(name).id

    def token(self, bot: str = "submitter") -> str:
        return self.emu.config.bot(bot).token

    def configure(self, *, worker: dict[str, Any] | None = None,
                  discord: dict[str, Any] | None = None,
                  executor: dict[str, Any] | None = None) -> None:
        cfg = self.emu.config
        settings: dict[str, Any] = {
            "api_base": self.emu.api_base, "guild_id": str(cfg.guild_id),
            "task_channel": str(self.channel("task-queue")),
            "results_channel": str(self.channel("results")),
            "pool_channel": str(self.channel("worker-pool")),
            "allowed_submitters": [str(b.id) for b in cfg.bots],
            # the bots that run dorch (a "stranger" bot a test adds is not one of them)
            "fleet_bots": [str(b.id) for b in cfg.bots
                           if b.name in WORKER_BOTS or b.name == "submitter"],
            "allowed_roles": [str(r.id) for r in cfg.roles if r.name == "dorch-submitter"],
        }
        settings.update(discord or {})
        work = {"poll_interval": 0.5, "lease_seconds": 8, "heartbeat_seconds": 2,
                "max_idle_time": 120, "max_attempts": 3, "task_timeout": 60}
        work.update(worker or {})
        recording = {"executor": {"kind": "command"}, "executor__command": {
            "argv": agent_command("recording_agent.py", str(self.executions_log))}}
        self.home.configure(bus={"kind": "discord"}, discord=settings, worker=work,
                            **({"executor": executor} if executor else recording))

    def dorch(self, *args: str, bot: str = "submitter", input: str | None = None,
              timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return self.home.dorch(*args, input=input, timeout=timeout,
                               env=self.home.env(**{TOKEN_ENV: self.token(bot)}, **env))

    def post(self, content: str, user: str = "alice",
             attachments: list[tuple[str, bytes | str]] | None = None) -> str:
        """A human types a task into #task-queue; its message id."""
        return str(self.emu.post_as_user(user, "task-queue", content, attachments)["id"])

    def messages(self, channel: str | int) -> list[dict[str, Any]]:
        return self.emu.messages(channel)

    def executions(self) -> list[dict[str, Any]]:
        if not self.executions_log.exists():
            return []
        return [json.loads(line) for line in self.executions_log.read_text().splitlines()]

    def summaries(self) -> list[str]:
        return [m["content"] for m in self.messages("results")]

    def fleet(self, count: int, **kwargs: Any) -> Fleet:
        fleet = Fleet(self, count, **kwargs)
        self.fleets.append(fleet)
        return fleet.start()


def started_agents(world: World) -> list[int]:
    """Pids of the SLOW agents that started working (the recording agent writes them)."""
    path = Path(f"{world.executions_log}.started")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def worker_of(agent: int) -> int:
    """The dorch worker above AGENT (the sandbox's reaper sits between them)."""
    pid = agent
    for _ in range(5):
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no dorch worker above agent {agent}")


def world_config(**overrides: Any) -> EmulatorConfig:
    data = json.loads(json.dumps(DEFAULT))
    data.update(overrides)
    return EmulatorConfig.from_dict(data)


def thread_messages(world: World, task_id: str) -> list[dict[str, Any]]:
    return world.messages(int(task_id))


def reactions(msg: dict[str, Any]) -> set[str]:
    return {r["emoji"]["name"].replace("\ufe0f", "") for r in msg.get("reactions") or []}



LINK = re.compile(r"https://discord\.com/channels/\d+/\d+/(\d+)")


def finished_ids(world: World) -> list[str]:
    """Task ids named by the summaries in #results, in the order they were posted."""
    return [found.group(1) for text in world.summaries() if (found := LINK.search(text))]


def executed_prompts(world: World) -> Counter[str]:
    """How many times the agent ran each prompt (the recording agent logs every execution)."""
    return Counter(e["prompt"] for e in world.executions())


def limit_figures(records: list[Any]) -> dict[str, Any]:
    """What the request log says of rate limits: requests, 429s and their share, and the 429s
    that came after their bucket was learned (more than a second after its first answer:
    not requests already in flight) or from the global limit."""
    learned: dict[tuple[Any, ...], float] = {}
    late = []
    for r in records:
        key = (r.bot, r.route, r.path.split("/")[2] if r.path.count("/") > 1 else "")
        if r.status == 429:
            if r.scope == "global" or (key in learned and r.time > learned[key] + 1.0):
                late.append((r.bot, r.route))
        elif "X-RateLimit-Bucket" in r.response_headers:
            learned.setdefault(key, r.time)
    limited = sum(r.status == 429 for r in records)
    return {"requests": len(records), "429": limited,
            "429 share": round(limited / max(len(records), 1), 4), "late 429": late}


def rate_limit_figures(world: World) -> dict[str, Any]:
    """Assert no bucket was exceeded except while it was being learned, no global 429, and
    429s under 1 % of requests. Returns the figures."""
    figures = limit_figures(world.emu.requests)
    late = figures.pop("late 429")
    assert not late, f"buckets exceeded after they were learned: {late}"
    assert figures["429 share"] < 0.01, f"{figures['429']} of {figures['requests']} requests got 429"
    return figures
