"""Test support for secrets: a real Secret Service, unique secret names, and a real terminal.

The keyring tests need a Secret Service on the session bus: run them under `.ci/with-keyring`
(a private D-Bus session with an unlocked GNOME Keyring). Without one they skip, except in CI
($CI set), where they fail.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import time
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def secret_service() -> str:
    """The keyring backend's name, after a set/get/delete round trip through it."""
    from dorch import secrets

    try:
        name = secrets.backend_name()
        probe = f"dorch-probe-{uuid.uuid4().hex[:8]}"
        secrets.keyring_set(probe, "probe-value")
        ok = secrets.find_secret(probe) == (secrets.KEYRING, "probe-value")
        secrets.keyring_delete(probe)
    except secrets.KeyringUnavailable as exc:
        reason = f"no Secret Service reachable ({exc}): run under .ci/with-keyring"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert ok, f"the keyring ({name}) did not give back what was stored"
    return name


@pytest.fixture
def secret_name(secret_service: str) -> Iterator[str]:
    """A fresh secret name, removed from the keyring afterwards."""
    from dorch import secrets

    name = f"dorch-test-{uuid.uuid4().hex[:10]}"
    yield name
    secrets.keyring_delete(name)


def discord_token(bot_id: int = 123456789012345678, tail: str = "") -> str:
    """A value shaped like a Discord bot token (not a real one)."""
    import base64

    first = base64.urlsafe_b64encode(str(bot_id).encode()).decode().rstrip("=")
    return f"{first}.GaBcDe.{(uuid.uuid4().hex + tail + 'x' * 38)[:38]}"


class Terminal:
    """A child process on a pseudo-terminal of its own (its controlling tty), read with deadlines."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        env = {**env, "TERM": "dumb", "COLUMNS": "200"}
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once
            try:
                if cwd:
                    os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.transcript = b""
        self._seen = 0
        self.status: int | None = None

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting until DEADLINE); False at end of output."""
        wait = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.transcript += data
        return True

    def expect(self, text: str, timeout: float = 30.0) -> str:
        """Wait until TEXT appears after what earlier calls matched; return the output up to it."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while True:
            at = self.transcript.find(want, self._seen)
            if at >= 0:
                seen = self.transcript[self._seen: at + len(want)]
                self._seen = at + len(want)
                return seen.decode(errors="replace")
            if time.monotonic() > deadline or not self._read(deadline):
                pytest.fail(f"terminal: no {text!r} within {timeout:.0f} s; got:\n{self.text}")

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 30.0) -> int:
        """Read everything until the child exits; its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                pytest.fail(f"terminal: still running after {timeout:.0f} s; got:\n{self.text}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is None:  # a test that failed half-way: do not leave the child behind
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)

    @property
    def text(self) -> str:
        return self.transcript.decode(errors="replace")
