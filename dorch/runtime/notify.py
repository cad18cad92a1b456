"""sd_notify: tell systemd we are READY, what we are doing (STATUS) and that we are alive (WATCHDOG).

A self-contained datagram to ``$NOTIFY_SOCKET`` (a leading ``@`` means an abstract socket), as
systemd's notify-selfcontained-example.py does. Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send MESSAGE (e.g. ``READY=1``); True when it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] not in ("/", "@"):
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready(status: str = "") -> None:
    notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> None:
    notify(f"STATUS={text}")


def stopping(text: str = "") -> None:
    notify("STOPPING=1" + (f"\nSTATUS={text}" if text else ""))


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``$WATCHDOG_USEC``), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.05)
    except ValueError:
        return None


def watchdog() -> None:
    notify("WATCHDOG=1")
