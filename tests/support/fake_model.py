"""A fake model server speaking the OpenAI chat-completions API the way OpenClaw calls it.

OpenClaw (``api: "openai-completions"``) sends ``POST {baseUrl}/chat/completions`` with
``stream: true``; this server answers with SSE ``chat.completion.chunk`` events ending in
``data: [DONE]``, usage in a last chunk with no choices, as OpenAI does. Replies are scripted by
rules, plain JSON so the same script works in-process and from a file:

    {"match": "substring of the prompt" | null, "model": "model id" | null,
     "turns": [turn, ...]}

The first rule whose ``match`` occurs in the conversation's user messages (and whose ``model``,
when given, is the requested one) answers. Turn k answers the conversation's k-th model call
(k = its assistant messages so far), so "call a tool, then answer" is two turns and concurrent
conversations never mix. Turns (helpers below build them):

    {"text": "answer"}                              a plain answer
    {"tool": "write", "args": {...}}                a tool call (the name must be offered)
    {"slow": 60, "text": "late"}                    wait (cut short when the server stops), answer
    {"hold": 120, "text": "answer"}                 wait until ``release()`` (at most 120 s), answer
    {"error": 500, "message": "boom"}               an HTTP error with an OpenAI error body
    any turn may add "usage": {"prompt_tokens": n, "completion_tokens": m}

Every request is recorded (``Recorded``) before it is answered, so a test can wait for "the
model was called" (``wait_requests``) and know the agent is at that point, without sleeping.

In-process:  ``async with FakeModel(rules) as fake: fake.base_url`` (port 0, 127.0.0.1), or
``with FakeModel(rules).running_in_thread() as fake:`` for synchronous tests.
Subprocess:  ``python tests/support/fake_model.py --rules rules.json --record requests.jsonl
--port-file port`` (``--port 0`` default); it runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

PROVIDER = "fake"
PLAIN_MODEL = "fake-model"          # reasoning: false; rejects thinking levels other than off
REASONING_MODEL = "fake-reasoner"   # reasoning: true, maps --thinking to reasoning_effort
API_KEY = "sk-fake-model-key"

Rule = dict[str, Any]
Turn = dict[str, Any]


def text(answer: str, **extra: Any) -> Turn:
    return {"text": answer, **extra}


def tool(name: str, **args: Any) -> Turn:
    return {"tool": name, "args": args}


def slow(seconds: float, answer: str = "too late") -> Turn:
    return {"slow": seconds, "text": answer}


def hold(answer: str, seconds: float = 240) -> Turn:
    return {"hold": seconds, "text": answer}


def error(status: int, message: str) -> Turn:
    return {"error": status, "message": message}


def rule(*turns: Turn, match: str | None = None, model: str | None = None) -> Rule:
    return {"match": match, "model": model, "turns": list(turns)}


@dataclass(frozen=True)
class Recorded:
    """One request as the model received it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def reasoning_effort(self) -> str | None:
        effort = self.body.get("reasoning_effort")
        if effort is None and isinstance(self.body.get("reasoning"), dict):
            effort = self.body["reasoning"].get("effort")
        return effort

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def user_text(self) -> str:
        """The text of every user message, joined by newlines.

        OpenClaw wraps the prompt (a timestamp before it, a runtime line after it) and adds a
        second user message of internal context, so look for the prompt *in* this text.
        """
        return "\n".join(_content_text(m.get("content")) for m in self.messages
                         if m.get("role") == "user")

    @property
    def tool_names(self) -> list[str]:
        return [t.get("function", {}).get("name", "") for t in self.body.get("tools") or []]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "body": self.body, "headers": self.headers, "at": self.at}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _turn_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many model calls this conversation has had (one-shot runs: one conversation each)."""
    return sum(1 for m in messages if m.get("role") == "assistant")


class FakeModel:
    """The server. ``rules`` are tried in order; ``record`` appends each request as a JSON line."""

    def __init__(self, rules: Sequence[Rule] = (), *, record: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.rules = [dict(r) for r in rules]
        self.requests: list[Recorded] = []
        self.record = record
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._closing: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._ids = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._released = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()   # ends every slow reply at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeModel:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[FakeModel]:
        """Run the server on its own event loop in a thread (for synchronous tests)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-model", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(30)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()

    # -- waiting for requests ----------------------------------------------------------------

    async def wait_requests(self, count: int = 1, timeout: float = 60.0) -> list[Recorded]:
        """Wait until at least ``count`` requests arrived; the requests. TimeoutError after ``timeout``."""
        assert self._changed is not None, "server not started"
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.requests) >= count), timeout
            )
        return list(self.requests)

    def wait_requests_sync(self, count: int = 1, timeout: float = 60.0) -> list[Recorded]:
        """``wait_requests`` from another thread (the server runs in ``running_in_thread``)."""
        assert self._loop is not None, "server not started"
        future = asyncio.run_coroutine_threadsafe(self.wait_requests(count, timeout), self._loop)
        return future.result(timeout + 5)

    def release(self) -> None:
        """Let every held reply (``hold`` turns) answer, now and from now on. Thread-safe."""
        assert self._loop is not None and self._released is not None, "server not started"
        self._loop.call_soon_threadsafe(self._released.set)

    # -- handlers ----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": PROVIDER}
                for m in (PLAIN_MODEL, REASONING_MODEL)]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error_response(400, "request body is not JSON")
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        headers["authorization-present"] = str("authorization" in
                                               {k.lower() for k in request.headers})
        recorded = Recorded(request.path, body, headers)
        await self._record(recorded)
        turn = self._pick(recorded)
        if "slow" in turn:
            assert self._closing is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), float(turn["slow"]))
            if self._closing.is_set():
                return _error_response(503, "fake model shutting down")
        if "hold" in turn:
            assert self._closing is not None and self._released is not None
            waits = {asyncio.ensure_future(self._closing.wait()),
                     asyncio.ensure_future(self._released.wait())}
            _, pending = await asyncio.wait(waits, timeout=float(turn["hold"]),
                                            return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if not self._released.is_set():
                return _error_response(503, "fake model: held reply never released")
        if "error" in turn:
            return _error_response(int(turn["error"]), str(turn.get("message", "error")))
        if body.get("stream"):
            return await self._stream(request, recorded, turn)
        return web.json_response(self._completion(recorded, turn))

    async def _record(self, recorded: Recorded) -> None:
        if self.record is not None:
            with open(self.record, "a", encoding="utf-8") as f:
                f.write(json.dumps(recorded.to_json(), ensure_ascii=False) + "\n")
        assert self._changed is not None
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()

    def _pick(self, recorded: Recorded) -> Turn:
        prompt = recorded.user_text
        for r in self.rules:
            if r.get("match") is not None and r["match"] not in prompt:
                continue
            if r.get("model") and r["model"] != recorded.model:
                continue
            turns = r.get("turns") or []
            index = _turn_index(recorded.messages)
            if not turns:
                break
            return dict(turns[min(index, len(turns) - 1)])
        return {"text": f"fake-model: no scripted reply for {prompt[:60]!r}"}

    def _usage(self, recorded: Recorded, turn: Turn, output: str) -> dict[str, int]:
        given = turn.get("usage") or {}
        prompt_tokens = int(given.get("prompt_tokens", max(1, len(json.dumps(recorded.messages)) // 4)))
        completion_tokens = int(given.get("completion_tokens", max(1, len(output) // 4)))
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def _next_id(self) -> str:
        self._ids += 1
        return f"chatcmpl-fake-{self._ids}"

    def _tool_call(self, turn: Turn) -> dict[str, Any]:
        self._ids += 1
        return {"id": f"call_fake_{self._ids}", "type": "function",
                "function": {"name": turn["tool"], "arguments": json.dumps(turn.get("args", {}))}}

    def _completion(self, recorded: Recorded, turn: Turn) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if "tool" in turn:
            message["tool_calls"] = [self._tool_call(turn)]
            finish, output = "tool_calls", message["tool_calls"][0]["function"]["arguments"]
        else:
            message["content"] = output = str(turn.get("text", ""))
            finish = "stop"
        return {
            "id": self._next_id(), "object": "chat.completion", "created": int(time.time()),
            "model": recorded.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(recorded, turn, output),
        }

    async def _stream(self, request: web.Request, recorded: Recorded, turn: Turn) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        cid, created, model = self._next_id(), int(time.time()), recorded.model

        def chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  usage: dict[str, int] | None = None) -> bytes:
            event: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk",
                                     "created": created, "model": model, "choices": []}
            if delta is not None:
                event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            if usage is not None:
                event["usage"] = usage
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        try:
            await response.write(chunk({"role": "assistant", "content": ""}))
            if "tool" in turn:
                call = self._tool_call(turn)
                args = call["function"]["arguments"]
                head = {"index": 0, "id": call["id"], "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""}}
                await response.write(chunk({"tool_calls": [head]}))
                await response.write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}))
                await response.write(chunk({}, "tool_calls"))
                output = args
            else:
                output = str(turn.get("text", ""))
                for piece in _pieces(output):
                    await response.write(chunk({"content": piece}))
                await response.write(chunk({}, "stop"))
            await response.write(chunk(None, usage=self._usage(recorded, turn, output)))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away (timeout, cancel): nothing to answer
        return response


def _pieces(answer: str, size: int = 16) -> list[str]:
    return [answer[i:i + size] for i in range(0, len(answer), size)] or [""]


def _error_response(status: int, message: str) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response({"error": {"message": message, "type": kind, "code": None}},
                             status=status)


def openclaw_config(base_url: str, *, default_model: str = PLAIN_MODEL,
                    timeout_seconds: int | None = None) -> dict[str, Any]:
    """An OpenClaw config that uses only this server: both models, nothing else."""
    common = {"input": ["text"], "contextWindow": 128000, "maxTokens": 4096,
              "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}}
    provider: dict[str, Any] = {
        "baseUrl": base_url, "apiKey": API_KEY, "api": "openai-completions",
        "models": [
            {"id": PLAIN_MODEL, "name": "Fake", "reasoning": False, **common},
            {"id": REASONING_MODEL, "name": "Fake Reasoner", "reasoning": True,
             "compat": {"supportsReasoningEffort": True}, **common},
        ],
    }
    if timeout_seconds is not None:
        provider["timeoutSeconds"] = timeout_seconds
    return {
        "models": {"mode": "replace", "providers": {PROVIDER: provider}},
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/{default_model}"}}},
    }


def write_openclaw_config(path: Path, base_url: str, **kwargs: Any) -> Path:
    path.write_text(json.dumps(openclaw_config(base_url, **kwargs), indent=2), encoding="utf-8")
    return path


async def _serve(args: argparse.Namespace) -> None:
    rules = json.loads(Path(args.rules).read_text(encoding="utf-8")) if args.rules else []
    fake = FakeModel(rules, record=Path(args.record) if args.record else None, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        if args.port_file:
            tmp = Path(args.port_file + ".tmp")
            tmp.write_text(str(fake.port))
            tmp.replace(args.port_file)
        print(f"fake model listening on {fake.base_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", help="JSON file: a list of rules (see the module docstring)")
    parser.add_argument("--record", help="append every request here as one JSON line")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
