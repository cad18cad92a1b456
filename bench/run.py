"""Every benchmark, one after the other (``make bench``): each prints its table and writes
``bench/results/<name>.json``; the run ends with the targets next to the figures.

    python bench/run.py [--quick]

``--quick`` runs smaller sizes (to check that the benchmarks work, not for figures). The whole
run takes about 10 minutes on a 2-core machine; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, heading, machine, table

HERE = Path(__file__).resolve().parent
BENCHES = [  # (script, arguments, quick arguments)
    ("restart.py", ["--runs", "6"], ["--runs", "3"]),
    ("local_bus.py", ["--tasks", "300"], ["--tasks", "60"]),
    ("protocols.py", ["--tasks", "30", "--idle", "20"], ["--tasks", "8", "--idle", "10"]),
    ("throughput.py", ["--tasks", "1000", "--protocol-tasks", "200"],
     ["--tasks", "100", "--protocol-tasks", "60"]),
    ("fleet_model.py", [], []),
]


def load(name: str) -> dict:
    try:
        return json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary() -> None:
    restart, local = load("restart"), load("local_bus")
    requests, throughput = load("requests"), load("throughput")
    rows = []
    if requests:
        d = requests["dorch"]
        rows += [
            ["requests per task, polls excluded", d["per_task_total"], "<= 6",
             verdict(d["per_task_total"] <= 6)],
            ["pickup latency p50 (s)", d["latency"]["p50"], "<= 1", verdict(d["latency"]["p50"] <= 1)],
            ["pickup latency p95 (s)", d["latency"]["p95"], "<= 3", verdict(d["latency"]["p95"] <= 3)],
        ]
    if throughput:
        share = throughput["tasks_per_minute"] / throughput["ceiling_per_minute"]
        rows += [
            ["throughput, share of the rate-limit ceiling", f"{share:.0%}", ">= 80%",
             verdict(share >= 0.8)],
            ["throughput: lost + executed twice", throughput["lost"] + throughput["executed_twice"],
             "0", verdict(throughput["lost"] + throughput["executed_twice"] == 0)],
        ]
    if restart:
        medians = restart["medians_ms"]
        poll = medians["start -> first poll (ms)"][1]
        rss = medians["idle RSS (MB)"]
        rows += [
            ["start -> first poll, Discord bus (ms)", poll, "<= 300", verdict(poll <= 300)],
            ["idle RSS, Discord bus (MB)", rss[1], "<= 40", verdict(rss[1] <= 40)],
        ]
    if local:
        rate = local["end_to_end"]["tasks_per_second"]
        rows.append(["local bus tasks/s (4 workers, echo)", rate, ">= 8", verdict(rate >= 8)])
    heading("targets")
    print(table(["figure", "value", "target", ""], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}, "
          f"Python {info['python']}")
    started = time.monotonic()
    for script, full, quick in BENCHES:
        step = time.monotonic()
        done = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)],
                              cwd=HERE, check=False)
        print(f"({script}: {time.monotonic() - step:.0f} s)", flush=True)
        if done.returncode:
            sys.exit(f"{script} failed with exit code {done.returncode}")
    summary()
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s; figures in {RESULTS}")


if __name__ == "__main__":
    main()
