"""A deliberately plain aiohttp caller for the emulator tests: no retries, no rate-limit logic,
so the tests see exactly what the emulator answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from dorch_emulator import Emulator
from dorch_emulator.remote import EmulatorProcess

T = TypeVar("T")
MakeEmulator = Callable[..., Emulator]  # the make_emulator fixture (tests/support/emulator.py)
MakeEmulatorProc = Callable[..., EmulatorProcess]  # the make_emulator_proc fixture


@dataclass
class Answer:
    status: int
    data: Any
    headers: dict[str, str]

    @property
    def code(self) -> int | None:
        return self.data.get("code") if isinstance(self.data, dict) else None


class Api:
    def __init__(self, session: aiohttp.ClientSession, emu: Emulator, bot: str = "worker-1") -> None:
        self.session = session
        self.emu = emu
        self.token = emu.config.bot(bot).token if bot else ""

    def as_bot(self, bot: str) -> Api:
        return Api(self.session, self.emu, bot)

    def channel(self, name: str = "task-queue") -> int:
        return self.emu.config.channel(name).id

    async def call(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                   params: dict[str, Any] | None = None, token: str | None = None) -> Answer:
        headers = {"Authorization": f"Bot {self.token if token is None else token}"}
        async with self.session.request(method, self.emu.api_base + path, json=json_body, data=data,
                                        params=params, headers=headers) as r:
            text = await r.text()
            body = json.loads(text) if r.headers.get("Content-Type") == "application/json" else text
            return Answer(r.status, body, dict(r.headers))

    async def post(self, channel: int, content: str, **payload: Any) -> Answer:
        body = {"content": content, **payload}
        return await self.call("POST", f"/channels/{channel}/messages", json_body=body)

    async def thread(self, channel: int, message_id: str | int, name: str = "task") -> Answer:
        return await self.call("POST", f"/channels/{channel}/messages/{message_id}/threads",
                               json_body={"name": name, "auto_archive_duration": 1440})

    async def react(self, channel: int, message_id: str | int, emoji: str = "✅",
                    method: str = "PUT") -> Answer:
        path = f"/channels/{channel}/messages/{message_id}/reactions/{quote(emoji)}/@me"
        return await self.call(method, path)

    async def messages(self, channel: int, **params: Any) -> Answer:
        return await self.call("GET", f"/channels/{channel}/messages", params=params)


def run(emu: Emulator, body: Callable[[Api], Awaitable[T]], bot: str = "worker-1") -> T:
    """Run BODY(api) in a fresh event loop with one client session."""
    async def go() -> T:
        async with aiohttp.ClientSession() as session:
            return await body(Api(session, emu, bot))

    return asyncio.run(go())
