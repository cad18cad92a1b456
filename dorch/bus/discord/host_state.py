"""What the Discord bus's processes on one host share (``$DATA/discord/bus-<channel>.json``).

A typed view over ``dorch.shared_state``: every method is one short critical section (no
awaits inside), and no other module of the bus touches the document's keys. The state is soft:
a lost file costs a few requests (the bot's id, roles, a preflight), never a task.

Keys (kept as dorch 0.1 wrote them, so processes of both versions may share a host):
``cursor`` where polling starts; ``running`` task id -> when the reaper should look at it;
``owners`` task id -> its thread's owner; ``suspects`` task id -> when this host first saw it
without a receipt; ``turns`` token -> [holder, until] (claiming in turn); ``me`` token -> bot
user id; ``preflight`` token -> when the permission checks last passed; ``roles`` user id ->
[role ids, when read]; ``ignored`` message ids already logged as ignored;
``unreachable_at``/``reachable_at`` the last failure to reach Discord and the first answer since.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dorch.shared_state import SharedState

KEPT_IGNORED = 1000  # message ids remembered as "already logged as ignored"
KEPT_ROLES = 2000  # members whose roles are cached (the oldest half goes beyond)


class HostState:
    """The host's shared Discord-bus state for one bot token (TOKEN_ID names it in the file)."""

    def __init__(self, state: SharedState, token_id: str) -> None:
        self._state = state
        self._token = token_id

    def close(self) -> None:
        self._state.close()

    # -- this bot ---------------------------------------------------------------------------

    def me(self) -> int | None:
        with self._state.locked() as doc:
            cached = (doc.get("me") or {}).get(self._token)
        return int(cached) if cached is not None else None

    def set_me(self, user_id: int) -> None:
        with self._state.locked() as doc:
            doc.setdefault("me", {})[self._token] = user_id

    def preflight_at(self) -> float:
        """When this token's permission checks last passed (0: never)."""
        with self._state.locked() as doc:
            return float((doc.get("preflight") or {}).get(self._token, 0))

    def set_preflight(self, when: float) -> None:
        with self._state.locked() as doc:
            doc.setdefault("preflight", {})[self._token] = when

    # -- members ----------------------------------------------------------------------------

    def roles(self, user_id: int, now: float, ttl: float) -> list[int] | None:
        """USER_ID's cached roles, if read less than TTL seconds before NOW."""
        with self._state.locked() as doc:
            cached = (doc.get("roles") or {}).get(str(user_id))
        if isinstance(cached, list) and len(cached) == 2 and now - cached[1] < ttl:
            return [int(r) for r in cached[0]]
        return None

    def set_roles(self, user_id: int, roles: list[int], now: float) -> None:
        with self._state.locked() as doc:
            table = doc.setdefault("roles", {})
            table[str(user_id)] = [roles, now]
            if len(table) > KEPT_ROLES:
                for key in sorted(table, key=lambda k: table[k][1])[:KEPT_ROLES // 2]:
                    del table[key]

    def first_ignore(self, message_id: str) -> bool:
        """Whether MESSAGE_ID is ignored here for the first time (then it is logged)."""
        with self._state.locked() as doc:
            seen: list[str] = doc.setdefault("ignored", [])
            if message_id in seen:
                return False
            seen.append(message_id)
            del seen[:-KEPT_IGNORED]
        return True

    # -- reaching Discord -------------------------------------------------------------------

    def unreachable(self, now: float) -> None:
        with self._state.locked() as doc:
            doc["unreachable_at"] = now

    def recovered(self, now: float) -> tuple[bool, float]:
        """(Discord answered for the first time since it could not be reached, when it was
        last reached after an outage). Marks NOW as that time on the first answer."""
        with self._state.locked() as doc:
            back = float(doc.get("unreachable_at") or 0) > float(doc.get("reachable_at") or 0)
            if back:
                doc["reachable_at"] = now
            return back, float(doc.get("reachable_at") or 0)

    # -- polling and the tasks seen running -------------------------------------------------

    def cursor(self) -> int:
        with self._state.locked() as doc:
            return int(doc.get("cursor") or 0)

    def record_poll(self, cursor: int, running: Iterable[tuple[str, float, int]],
                    finished: Iterable[str]) -> None:
        """After a poll: move the cursor forward (never back) to CURSOR, note the tasks seen
        RUNNING ((id, when to look, thread owner); the first sighting counts) and forget the
        FINISHED ones."""
        with self._state.locked() as doc:
            if cursor > int(doc.get("cursor") or 0):
                doc["cursor"] = cursor
            table: dict[str, float] = doc.setdefault("running", {})
            owners: dict[str, int] = doc.setdefault("owners", {})
            for key, when, owner in running:
                if key not in table:
                    table[key] = when
                    owners[key] = owner
            for key in finished:
                table.pop(key, None)
                owners.pop(key, None)

    def take_due(self, now: float, batch: int, recheck_at: float) -> list[str]:
        """Up to BATCH running tasks due for a look (oldest first); they are not due for the
        host's other processes before RECHECK_AT."""
        with self._state.locked() as doc:
            table: dict[str, float] = doc.setdefault("running", {})
            due = sorted((k for k, t in table.items() if t <= now), key=int)[:batch]
            for key in due:
                table[key] = recheck_at
        return due

    def schedule(self, key: str, when: float | None) -> None:
        """Look at running task KEY again at WHEN (None: it is over, forget it)."""
        with self._state.locked() as doc:
            table = doc.setdefault("running", {})
            if when is None:
                table.pop(key, None)
                _pop(doc, "suspects", key)
                _pop(doc, "owners", key)
            else:
                table[key] = when

    def owner(self, key: str) -> int | None:
        """The owner of running task KEY's thread, as the poll saw it."""
        with self._state.locked() as doc:
            owner = (doc.get("owners") or {}).get(key)
        return int(owner) if owner is not None else None

    def suspect_since(self, key: str, now: float) -> float:
        """When this host first saw task KEY without a receipt (NOW if this is the first time)."""
        with self._state.locked() as doc:
            return float(doc.setdefault("suspects", {}).setdefault(key, now))

    # -- claiming in turn -------------------------------------------------------------------

    def take_turn(self, holder: str, now: float, ttl: float) -> bool:
        """Take this token's claiming turn for HOLDER until NOW + TTL, if it is free."""
        with self._state.locked() as doc:
            turns: dict[str, list[Any]] = doc.setdefault("turns", {})
            current = turns.get(self._token)
            if current and current[1] >= now:
                return False
            turns[self._token] = [holder, now + ttl]
            return True

    def drop_turn(self, holder: str) -> None:
        with self._state.locked() as doc:
            turns = doc.get("turns") or {}
            if turns.get(self._token, [None])[0] == holder:
                del turns[self._token]


def _pop(doc: dict[str, Any], table: str, key: str) -> None:
    found = doc.get(table)
    if isinstance(found, dict):
        found.pop(key, None)
