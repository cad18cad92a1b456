"""A separate process using a LocalBus, for the local bus's multi-process tests.

    local_bus_proc.py QUEUE NAME claim-all      claim and finish until the queue is empty
    local_bus_proc.py QUEUE NAME reap MAX       reap expired leases once
    local_bus_proc.py QUEUE NAME submit N       submit N tasks
    local_bus_proc.py QUEUE NAME hold           open the queue and keep it open until stdin closes

Each process opens the queue, prints ``ready``, waits for a line on stdin (so the test can
start all of them at once), does its job and prints one JSON line with what it did.

With ``DORCH_TEST_AS=UID:GID:GROUP`` (started as root) the process becomes that user once its
imports are done: the interpreter may live where other users cannot read it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from dorch.bus.local import LocalBus
from dorch.model import Result, State, TaskSpec


def become(spec: str) -> None:
    uid, gid, group = (int(x) for x in spec.split(":"))
    os.setgroups([group])
    os.setgid(gid)
    os.setuid(uid)


async def main(queue: str, name: str, mode: str, args: list[str]) -> None:
    if os.environ.get("DORCH_TEST_AS"):
        become(os.environ["DORCH_TEST_AS"])
    bus = LocalBus(Path(queue))
    print("ready", flush=True)
    sys.stdin.readline()
    done: object
    if mode == "claim-all":
        claimed = []
        while (claim := await bus.claim(name, 60)) is not None:
            claimed.append(claim.task.id)
            ok = await bus.finish(claim, Result(State.SUCCEEDED, output=f"{claim.task.id} by {name}"))
            if not ok:
                raise SystemExit(f"{name}: finish of task {claim.task.id} was fenced")
        done = claimed
    elif mode == "reap":
        done = await bus.reap(int(args[0]))
    elif mode == "submit":
        done = [await bus.submit(TaskSpec(f"task {i} from {name}")) for i in range(int(args[0]))]
    elif mode == "hold":
        done = None
        print(json.dumps(done), flush=True)
        sys.stdin.read()
        await bus.close()
        return
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    await bus.close()
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
