"""The fleet model: what 10, 100 and 1,000 workers ask of Discord at the default intervals, next
to Discord's limits, and the settings that keep a 1,000-worker fleet inside them.

    python bench/fleet_model.py [--per-host 4] [--task-seconds 120]

Arithmetic, not a measurement: per worker, an idle one polls once per ``poll_interval``, a busy
one renews its lease every ``heartbeat_seconds`` (an edit and a read), and each task costs the
requests bench/requests.py measured (its JSON, when present; else the count below). One bot per
host, as the README advises. Two cases bound every mix: the whole fleet idle, and the whole
fleet busy with tasks of ``--task-seconds``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from common import RESULTS, heading, table, write_json
from dorch_emulator.config import DEFAULT_ROUTE_LIMITS

from dorch.config import SCHEMA

GLOBAL_PER_BOT = 50.0  # requests per second per bot token (Discord's documented global limit)
ACTIVE_THREADS = 1000  # active threads per guild; dorch archives a task's thread when it ends
INVALID_PER_10_MIN = 10_000  # 401/403/429 per IP before Cloudflare bans it
# Requests of one task by route, as bench/requests.py counts them (used when it has not run).
PER_TASK_FALLBACK = {"start_thread": 1, "create_message": 4, "reactions": 2, "edit_message": 3,
                     "modify_channel": 1, "default": 1}


def per_second(route: str) -> float:
    limit = DEFAULT_ROUTE_LIMITS[route]
    return limit.limit / limit.per


@dataclass
class Settings:
    poll_interval: float
    heartbeat_seconds: float
    lease_seconds: float


def defaults() -> Settings:
    worker = SCHEMA["worker"]
    return Settings(float(worker["poll_interval"].default), float(worker["heartbeat_seconds"].default),
                    float(worker["lease_seconds"].default))


def measured_per_task() -> tuple[dict[str, float], str]:
    """Requests per task by emulator route, from bench/requests.py's last run if there is one."""
    path = RESULTS / "requests.json"
    try:
        data = json.loads(path.read_text())
        return {k: float(v) for k, v in data["dorch"]["per_task_by_bucket"].items()}, str(path)
    except (OSError, KeyError, ValueError):
        return {k: float(v) for k, v in PER_TASK_FALLBACK.items()}, "the fallback estimate"


def model(workers: int, per_host: int, task_seconds: float, s: Settings,
          per_task: dict[str, float]) -> dict[str, Any]:
    hosts = -(-workers // per_host)
    on_bot = min(per_host, workers)  # workers sharing one bot token
    tasks = 1.0 / task_seconds  # per busy worker per second
    idle = {"polls": on_bot / s.poll_interval}
    busy = {k: on_bot * tasks * v for k, v in per_task.items()}
    busy["heartbeats"] = on_bot * 2 / s.heartbeat_seconds
    busy_total = sum(busy.values())
    return {
        "workers": workers, "hosts": hosts, "bots": hosts,
        "idle_per_bot": idle["polls"], "busy_per_bot": busy_total,
        "idle_fleet": idle["polls"] * hosts, "busy_fleet": busy_total * hosts,
        "global_share": max(idle["polls"], busy_total) / GLOBAL_PER_BOT,
        "poll_bucket_share": idle["polls"] / per_second("default"),
        "results_bucket_share": on_bot * tasks / per_second("create_message"),
        "thread_bucket_share": on_bot * tasks * per_task.get("start_thread", 1) / per_second("start_thread"),
        "reaction_bucket_share": on_bot * tasks * per_task.get("reactions", 2) / per_second("reactions"),
        "active_threads": workers, "thread_cap_share": workers / ACTIVE_THREADS,
        "host_poll_gap": s.poll_interval / on_bot,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-host", type=int, default=4, help="workers per host (one bot each)")
    parser.add_argument("--task-seconds", type=float, default=120.0, help="a busy task's length")
    args = parser.parse_args()
    per_task, source = measured_per_task()
    base = defaults()
    heading(f"fleet model: {args.per_host} workers per host and bot (unless said), tasks of "
            f"{args.task_seconds:.0f} s, {sum(per_task.values()):.1f} requests per task (from {source})")
    print(f"limits: {GLOBAL_PER_BOT:.0f} requests/s per bot; per bot and channel (emulator, as "
          f"observed on Discord): polls {per_second('default'):.0f}/s, posts "
          f"{per_second('create_message'):.0f}/s, threads {per_second('start_thread'):.0f}/s, "
          f"reactions {per_second('reactions'):.0f}/s; {ACTIVE_THREADS} active threads per guild; "
          f"{INVALID_PER_10_MIN:,} invalid requests per 10 min per IP")
    tuned = Settings(poll_interval=10.0, heartbeat_seconds=30.0, lease_seconds=120.0)
    cases = [("defaults", base, args.per_host, n) for n in (10, 100, 1000)] + [
        ("1,000-worker settings", tuned, per_host, 1000) for per_host in (args.per_host, 16)]
    rows, out = [], {}
    for label, settings, per_host, workers in cases:
        m = model(workers, per_host, args.task_seconds, settings, per_task)
        out[f"{label}/{workers}/{per_host}"] = m
        rows.append([label, workers, per_host, m["bots"], m["idle_per_bot"], m["busy_per_bot"],
                     m["idle_fleet"], m["busy_fleet"], f"{m['global_share']:.1%}",
                     f"{m['poll_bucket_share']:.1%}", f"{m['results_bucket_share']:.1%}",
                     f"{m['thread_cap_share']:.0%}", m["host_poll_gap"]])
    print(table(["settings", "workers", "per bot", "bots", "idle req/s/bot", "busy req/s/bot",
                 "idle req/s fleet", "busy req/s fleet", "of global", "of poll bucket",
                 "of #results bucket", "of thread cap", "host polls every s"], rows))
    print(f"\ndefaults: poll_interval {base.poll_interval:g} s, heartbeat {base.heartbeat_seconds:g} s, "
          f"lease {base.lease_seconds:g} s. 1,000-worker settings: poll_interval "
          f"{tuned.poll_interval:g} s, heartbeat_seconds {tuned.heartbeat_seconds:g}, lease_seconds "
          f"{tuned.lease_seconds:g}.")
    print("Every bot stays far inside its own limits at any size: a bot carries only its host's "
          "workers.\nWhat grows with the fleet is the guild: every running task holds an active "
          f"thread, so a 1,000-worker fleet all busy reaches the {ACTIVE_THREADS}-thread cap "
          "(code 160006).\nKeep at most ~900 tasks running per guild: a second guild (its own "
          "#task-queue) for the rest, or fewer workers per guild.")
    write_json("fleet_model", {"per_task": per_task, "per_task_source": source,
                               "per_host": args.per_host, "task_seconds": args.task_seconds,
                               "rows": out})


if __name__ == "__main__":
    main()
