"""Who the Discord bus believes. Every bot (and every webhook, which Discord shows as a bot)
can write dorch's markers, and any member may start a thread on a task, so a marker counts
only when the right account wrote it where it may:

- the fleet is ``[discord] fleet_bots`` (bot user ids) plus this bot;
- a thread on a task is a claim only when a fleet bot started it (its ``owner_id``);
- claim receipts and results count only when the thread's owner wrote them;
- notes, #results lines and board rows count only when a fleet bot wrote them;
- webhook and application (interaction) messages are never markers, and never tasks unless
  their webhook or application id is listed in ``allowed_submitters``;
- a receipt's lease is never believed beyond the time it was written (or edited) plus
  ``lease_seconds`` and a clock-skew allowance, nor beyond now plus the same.

An empty ``fleet_bots`` (configurations written before it existed) falls back to the bots
listed in ``allowed_submitters``, as the README then asked; ``dorch doctor`` says to fill it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dorch.discord.types import Channel, Message

CLOCK_SKEW = 30.0  # s a receipt's lease may run past what its writer could have set


def epoch(iso: str | None) -> float:
    """Seconds since the epoch of a Discord ISO timestamp (0.0 when absent or malformed)."""
    if not iso:
        return 0.0
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def author_id(msg: Message) -> int:
    return int((msg.get("author") or {}).get("id") or 0)


def is_app_message(msg: Message) -> bool:
    """Posted through a webhook or as an application's (interaction) answer."""
    return bool(msg.get("webhook_id") or msg.get("application_id")
                or msg.get("interaction") or msg.get("interaction_metadata"))


def sender_ids(msg: Message) -> set[int]:
    """The ids an allow list may name for MSG: its webhook's, its application's, or its author's."""
    ids = {int(msg[key]) for key in ("webhook_id", "application_id") if msg.get(key)}
    return ids or {author_id(msg)}


def thread_owner(thread: Channel) -> int:
    return int(thread.get("owner_id") or 0)


def written_at(msg: Message) -> float:
    """When MSG was last written (edited, else created), by Discord's clock."""
    return epoch(msg.get("edited_timestamp")) or epoch(msg.get("timestamp"))


@dataclass(frozen=True)
class Fleet:
    """The bot user ids whose markers dorch believes."""

    bots: frozenset[int]

    @classmethod
    def from_config(cls, discord: dict[str, Any], me: int | None = None) -> Fleet:
        bots = {int(b) for b in discord.get("fleet_bots") or []}
        if not bots:  # before fleet_bots: the README asked to list the fleet's bots here
            bots = {int(u) for u in discord.get("allowed_submitters") or []}
        if me is not None:
            bots.add(int(me))
        return cls(frozenset(bots))

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, (int, str)) and str(user_id).isdigit() \
            and int(user_id) in self.bots

    def wrote(self, msg: Message) -> bool:
        """MSG is a marker a fleet bot wrote (note, #results line, board row, re-posted task)."""
        author = msg.get("author") or {}
        return bool(author.get("bot")) and not is_app_message(msg) and author_id(msg) in self.bots

    def owns(self, thread: Channel) -> bool:
        """THREAD is a claim: a fleet bot started it."""
        return thread_owner(thread) in self.bots

    def owner_wrote(self, msg: Message, thread: Channel) -> bool:
        """MSG is a receipt or result that counts: written by THREAD's owner, a fleet bot."""
        return self.wrote(msg) and author_id(msg) == thread_owner(thread) and self.owns(thread)

    def markers(self, msgs: Iterable[Message]) -> list[Message]:
        """The messages of MSGS a fleet bot wrote."""
        return [m for m in msgs if self.wrote(m)]


def lease_cap(lease_until: float, msg: Message, lease_seconds: float, now: float) -> float:
    """The end of a receipt's lease as far as dorch believes it: its holder can only have set
    it to when it wrote the receipt plus one lease (plus clock skew)."""
    cap = min(written_at(msg) or now, now) + lease_seconds + CLOCK_SKEW
    return min(float(lease_until), cap)
