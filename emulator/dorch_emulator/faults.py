"""Fault injection: what a test or a benchmark can make the emulated Discord do wrong."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

OUTAGES = ("off", "503", "reset", "refuse")


@dataclass
class Faults:
    """Current faults. Applied to Discord API requests only, never to the control API.

    ``outage``: ``off``; ``503`` (every API request gets a Cloudflare-style 503 page); ``reset``
    (the connection is dropped without a response); ``refuse`` (the listening socket is closed:
    connection refused; with ``outage_seconds`` it reopens by itself, which is how a test driving
    a separate process ends it). ``latency`` is added before each request; ``error_rate`` is the
    share of requests answered with ``error_status``; ``shared_429_rate`` the share answered with
    a shared-scope 429 (which Discord does not count as an invalid request).
    ``drop_responses``: the next N API requests are carried out (a message is created, a thread
    started) and then the connection is dropped without an answer, as when a response is lost on
    the way back; ``fail_next``: the next N API requests get ``error_status`` (deterministic
    retries). Both count down by themselves. ``drop_response_rate``: the share of API requests
    that are carried out and then lose their answer that way (webhook executions included).
    """

    outage: str = "off"
    outage_seconds: float = 0.0
    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 502
    shared_429_rate: float = 0.0
    shared_retry_after: float = 1.0
    drop_responses: int = 0
    drop_response_rate: float = 0.0
    fail_next: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply CHANGES (field -> value) after checking every one; a bad one changes nothing."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in fields:
                raise ValueError(f"faults: unknown field {key!r}; use one of {', '.join(fields)}")
            if key == "outage":
                value = "off" if value is False or value is None else "503" if value is True else str(value)
                if value not in OUTAGES:
                    raise ValueError(f"faults.outage must be one of {', '.join(OUTAGES)}, not {value!r}")
            elif key in ("drop_responses", "fail_next"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"faults.{key} must be a whole number >= 0")
            elif key == "error_status":
                if isinstance(value, bool) or not isinstance(value, int) or not 500 <= value <= 599:
                    raise ValueError("faults.error_status must be an HTTP 5xx status")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"faults.{key} must be a number >= 0")
                if key.endswith("_rate") and value > 1:
                    raise ValueError(f"faults.{key} is a probability between 0 and 1")
                value = float(value)
            checked[key] = value
        for key, value in checked.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
