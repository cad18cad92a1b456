"""A reverse proxy in front of the emulator that does not know some routes, as a proxy or an API
change would: those answer 404 ``{"message": "404: Not Found", "code": 0}`` like Discord does
for an unknown route; everything else is forwarded as is. Serves from a thread of its own.

    with RouteProxy(emu.url, hidden={("GET", "/applications/@me")}) as proxy:
        api_base = proxy.url + "/api/v10"
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import aiohttp
from aiohttp import web

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
        "content-encoding"}


class RouteProxy:
    def __init__(self, upstream: str, hidden: set[tuple[str, str]]) -> None:
        self.upstream = upstream.rstrip("/")
        self.hidden = hidden  # (method, path after /api/vN)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        tail = "/" + request.match_info["tail"]
        if (request.method, tail) in self.hidden:
            return web.json_response({"message": "404: Not Found", "code": 0}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
                request.method, f"{self.upstream}/api/{request.match_info['version']}{tail}",
                params=request.query, data=await request.read(), headers=headers) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return web.Response(status=resp.status, body=body, headers=out)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> web.AppRunner:
            self._session = aiohttp.ClientSession(auto_decompress=False)
            app = web.Application()
            app.router.add_route("*", "/api/{version}/{tail:.*}", self._forward)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            return runner

        self._runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> RouteProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        async def stop() -> None:
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
