"""A child process for the client's multi-process tests: one DiscordClient, one job.

    python -m tests.support.client_child '{"job": "post", "api_base": ..., "token": ..., ...}'

It prints ``ready``, waits for a line on stdin (so every child starts its burst together),
runs the job and prints one JSON line with what happened. The token arrives in the JSON on
argv here only because emulator tokens are test fixtures.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from dorch.discord import errors
from dorch.discord.client import DiscordClient


async def post(client: DiscordClient, job: dict[str, Any]) -> dict[str, Any]:
    channels = job["channels"]
    ids: list[str] = []

    async def one(n: int) -> None:
        msg = await client.create_message(channels[n % len(channels)], f"{job['tag']} {n}")
        ids.append(msg["id"])

    await asyncio.gather(*(one(n) for n in range(job["count"])))
    return {"ids": ids}


async def invalid(client: DiscordClient, job: dict[str, Any]) -> dict[str, Any]:
    refused = 0
    for _ in range(job["count"]):
        try:
            await client.me()
        except errors.Unauthorized:
            refused += 1
    return {"unauthorized": refused}


async def main(job: dict[str, Any]) -> None:
    client = DiscordClient(job["token"], api_base=job["api_base"], state_dir=job["state_dir"],
                           retry_base=0.05, **job.get("client", {}))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async with client:
        result = await {"post": post, "invalid": invalid}[job["job"]](client, job)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
