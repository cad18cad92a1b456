"""What the emulator saw: one record per Discord API request, and counters for assertions."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

MAX_RECORDS = 200_000  # the oldest records go first; the counters keep counting


@dataclass
class RequestRecord:
    """One API request. ``body`` is the JSON body (or a multipart request's ``payload_json``);
    the token is never recorded, only which bot it belonged to."""

    time: float  # unix time the request arrived
    method: str
    path: str  # without the /api/vN prefix
    route: str  # e.g. "POST /channels/{channel_id}/messages"; "" when no route matched
    ip: str
    bot: str | None = None  # bot name
    bot_id: str | None = None
    status: int = 0
    code: int | None = None  # Discord's JSON error code
    body: Any = None
    files: list[str] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    scope: str | None = None  # on a 429: user, global, shared, or cloudflare
    retry_after: float | None = None
    fault: str | None = None  # the injected fault that answered, if any
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RequestLog:
    """Thread-safe: records are appended by the server and read by tests in other threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=MAX_RECORDS)
        self._dropped = 0
        self.by_route: dict[str, Counter[int]] = {}
        self.by_status: Counter[int] = Counter()
        self.by_bot: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            if len(self._records) == MAX_RECORDS:
                self._dropped += 1
            self._records.append(record)
            self.by_route.setdefault(record.route or "(no route)", Counter())[record.status] += 1
            self.by_status[record.status] += 1
            if record.bot:
                self.by_bot[record.bot] += 1
            if record.scope:
                self.rate_limited[record.scope] += 1
            if record.fault:
                self.faults[record.fault] += 1

    def records(self, since: int = 0) -> list[RequestRecord]:
        """Records from index SINCE on (indexes count every record ever added)."""
        return self.since(since)[0]

    def since(self, index: int) -> tuple[list[RequestRecord], int]:
        """(records from INDEX on, the index to ask for next time)."""
        with self._lock:
            start = max(0, index - self._dropped)
            return list(self._records)[start:], self._dropped + len(self._records)

    def total(self) -> int:
        with self._lock:
            return self._dropped + len(self._records)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._dropped + len(self._records),
                "by_route": {route: dict(c) for route, c in self.by_route.items()},
                "by_status": dict(self.by_status),
                "by_bot": dict(self.by_bot),
                "rate_limited": dict(self.rate_limited),
                "faults": dict(self.faults),
            }

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._dropped = 0
            self.by_route.clear()
            self.by_status.clear()
            self.by_bot.clear()
            self.rate_limited.clear()
            self.faults.clear()
