"""Drive an emulator running in another process through its control API (synchronous, stdlib
only), e.g. from a test or a benchmark that starts many worker processes."""

from __future__ import annotations

import base64
import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from dorch_emulator.control import PREFIX


class RemoteError(Exception):
    """The control API refused: STATUS and its JSON answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"emulator control API answered {status}: {body}")
        self.status = status
        self.body = body


class RemoteEmulator:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + PREFIX + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            raise RemoteError(exc.code, json.loads(raw) if raw else None) from None
        return json.loads(raw) if raw else None

    def health(self) -> bool:
        return bool(self._call("GET", "/health")["ok"])

    def state(self) -> dict[str, Any]:
        """Ids of the guild, channels, roles, bots (with tokens) and users, and the URLs."""
        return dict(self._call("GET", "/state"))

    def post_as_user(self, user: str | int, channel: str | int, content: str,
                     attachments: list[tuple[str, bytes | str]] | None = None,
                     **payload: Any) -> dict[str, Any]:
        files = [{"filename": name, "base64": base64.b64encode(
            data.encode() if isinstance(data, str) else data).decode()} for name, data in attachments or []]
        return dict(self._call("POST", "/messages", {"user": str(user), "channel": str(channel),
                                                     "content": content, "attachments": files, **payload}))

    def react_as_user(self, user: str | int, channel: str | int, message_id: int | str, emoji: str,
                      remove: bool = False) -> None:
        body = {"user": str(user), "channel": str(channel), "message_id": str(message_id), "emoji": emoji}
        self._call("DELETE" if remove else "PUT", "/reactions", body)

    def messages(self, channel: str | int, after: int | str = 0) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/messages?channel={channel}&after={after}"))

    def start_thread_as_user(self, user: str | int, channel: str | int, message_id: int | str,
                             name: str = "thread") -> dict[str, Any]:
        return dict(self._call("POST", "/threads", {"user": str(user), "channel": str(channel),
                                                    "message_id": str(message_id), "name": name}))

    def modify_thread_as_user(self, user: str | int, thread_id: int | str,
                              **changes: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", f"/threads/{thread_id}", {"user": str(user), **changes}))

    def create_webhook(self, channel: str | int, name: str = "Captain Hook",
                       user: str | int | None = None) -> dict[str, Any]:
        body = {"channel": str(channel), "name": name} | ({"user": str(user)} if user else {})
        return dict(self._call("POST", "/webhooks", body))

    def execute_webhook(self, webhook: dict[str, Any], content: str, thread_id: int | str | None = None,
                        **payload: Any) -> dict[str, Any]:
        body = {"content": content, **payload} | ({"thread_id": str(thread_id)} if thread_id else {})
        return dict(self._call("POST", f"/webhooks/{webhook['id']}/{webhook['token']}/messages", body))

    def post_as_app(self, app: str | int, user: str | int, channel: str | int, content: str,
                    command: str = "run") -> dict[str, Any]:
        return dict(self._call("POST", "/app-messages", {"app": str(app), "user": str(user),
                                                         "channel": str(channel), "content": content,
                                                         "command": command}))

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", "/faults", changes))

    def requests(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """(request records from index SINCE on, the index to pass next time)."""
        answer = self._call("GET", f"/requests?since={since}")
        return list(answer["requests"]), int(answer["next"])

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/stats"))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/clock", {"advance": seconds})


class EmulatorProcess:
    """An emulator in a child process (``python -m dorch_emulator``) on a free port.

    ``with EmulatorProcess(config_path) as emu:`` waits until it has printed its URL (no
    sleeping: it reads the announcement, with a deadline), then ``emu.remote`` drives it.
    """

    def __init__(self, config: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 30.0, stderr: Any = None) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.timeout = timeout
        self._stderr = stderr
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def remote(self) -> RemoteEmulator:
        return RemoteEmulator(self.url)

    def start(self) -> EmulatorProcess:
        argv = [sys.executable, "-m", "dorch_emulator", "--host", self.host, "--port", str(self.port)]
        if self.config:
            argv += ["--config", str(self.config)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     stdin=subprocess.DEVNULL)
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None
        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while not self.url:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, min(left, 0.5)))
            except queue.Empty:
                line = ""
            found = re.search(r"url=(\S+)", line)
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None:
                raise RuntimeError(f"the emulator exited with status {self.proc.returncode} before listening")
            elif left <= 0:
                self.stop()
                raise RuntimeError(f"the emulator did not announce its URL within {self.timeout:.0f} s")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
