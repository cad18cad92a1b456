"""The server as the bus's parts use it: links, this bot's id, members, archiving threads,
marking task messages, notes in threads someone else owns; and Discord's errors mapped to the
bus's (configuration: exit 78; anything else: temporary, exit 75).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from dorch.bus import BusConfigError, BusError
from dorch.bus.discord import formats
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.host_state import HostState
from dorch.discord import errors
from dorch.discord.client import DiscordClient

log = logging.getLogger("dorch.bus.discord")

ARCHIVED_THREAD = 50083
# Errors that mean Discord could not be reached (from here): leases could not be renewed either.
UNREACHABLE = (errors.DiscordConnectionError, errors.ServerError, errors.RateLimited,
               errors.CloudflareBan, errors.TooManyInvalidRequests)


class Guild:
    """One bot in one server, with the bus's three channels."""

    def __init__(self, client: DiscordClient, settings: Settings, state: HostState,
                 clock: Callable[[], float]) -> None:
        self.client = client
        self.settings = settings
        self.state = state
        self.clock = clock
        self._me: int | None = None
        self._labels = {settings.task_channel: "#task-queue ([discord] task_channel)",
                        settings.results_channel: "#results ([discord] results_channel)",
                        settings.pool_channel: "#worker-pool ([discord] pool_channel)"}

    def link(self, message_id: int | str, channel: int | str | None = None) -> str:
        return formats.link(self.settings.guild, channel or self.settings.task_channel,
                            message_id)

    async def me(self) -> int:
        """The bot's user id, cached on the host (a worker process must not ask every task)."""
        if self._me is None:
            cached = self.state.me()
            if cached is None:
                cached = int((await self.client.me())["id"])
                self.state.set_me(cached)
            self._me = cached
        return self._me

    async def member_roles(self, user_id: int) -> list[int]:
        """USER_ID's roles in the server (none once they left)."""
        try:
            member = await self.client.get_member(self.settings.guild, user_id)
        except errors.NotFound:
            return []
        return [int(r) for r in member.get("roles") or []]

    async def user_label(self, user_id: int) -> str:
        """``name (id N)`` of a guild member, for notes that say who did something."""
        try:
            member = await self.client.get_member(self.settings.guild, user_id)
            name = str((member.get("user") or {}).get("username") or "?")
        except errors.NotFound:
            name = "a former member"
        except errors.DiscordError:  # called after a compare-and-set: never fail here
            name = "user"
        return f"{formats.clean_name(name)} (id {user_id})"

    async def archive(self, thread_id: int | str, *, mark: str = "", name: str = "") -> None:
        """Archive a task's thread (it keeps the guild under its active-thread cap). MARK (an
        emoji: how the task ended) goes on the task message: in front of the thread's NAME,
        in the same request, when the name is known, else as a reaction."""
        fields: dict[str, object] = {"archived": True, "locked": False}
        if mark and name:
            fields["name"] = f"{mark} {name}"[:100]
        elif mark:
            await self.react(thread_id, mark)
        try:
            await self.client.edit_channel(thread_id, **fields)
        except errors.NotFound:
            pass
        except errors.BadRequest as exc:
            if exc.code != ARCHIVED_THREAD:
                raise

    async def react(self, message_id: int | str, emoji: str) -> None:
        """Mark a task message for people; a deleted message or archived thread is fine."""
        with contextlib.suppress(errors.NotFound):
            await self.client.add_reaction(self.settings.task_channel, message_id, emoji)

    async def thread_exists(self, thread_id: str) -> bool:
        try:
            await self.client.get_channel(thread_id)
        except errors.NotFound:
            return False
        return True

    async def foreign_note(self, thread: str, text: str, nonce: str) -> None:
        """A note in a thread someone outside the fleet started: they may have locked or
        deleted it, and that must not hold the outbox up (the note is for people)."""
        try:
            await self.client.create_message(thread, text, nonce=nonce)
        except (errors.Forbidden, errors.NotFound, errors.BadRequest) as exc:
            log.warning("could not post a note in thread %s (%s): %s", thread, type(exc).__name__,
                        text.partition("\n")[0])

    def _where(self, exc: errors.DiscordHTTPError) -> str:
        for channel, label in self._labels.items():
            if f"/channels/{channel}" in exc.path:
                return label
        return exc.path or "Discord"

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Discord's errors as the bus's: configuration (exit 78) or temporary (exit 75)."""
        try:
            yield
        except errors.Unauthorized:
            raise BusConfigError(
                f"{doing}: Discord rejected the bot token (HTTP 401): it was revoked, reset or "
                "mistyped. Store the current token (`dorch token set NAME`, or the systemd "
                "credential) and start again"
            ) from None
        except errors.Forbidden as exc:
            raise BusConfigError(
                f"{doing}: the bot may not do this in {self._where(exc)} (HTTP 403, code "
                f"{exc.code}: {exc.text}). Give it View Channel, Read Message History, Send "
                "Messages, Add Reactions, Create Public Threads, Send Messages in Threads, "
                "Manage Messages and Manage Threads there; `dorch doctor` shows what is missing"
            ) from None
        except errors.UnknownRoute as exc:
            raise BusConfigError(
                f"{doing}: {exc}; it is now {self.client.api_base}") from None
        except errors.NotFound as exc:
            if exc.code in (errors.UNKNOWN_CHANNEL, errors.UNKNOWN_GUILD):
                raise BusConfigError(
                    f"{doing}: {self._where(exc)} does not exist or the bot is not in the server "
                    f"(code {exc.code}); check the ids in [discord] and the bot's invitation"
                ) from None
            raise BusError(f"{doing}: {exc}") from None
        except errors.DiscordError as exc:
            if isinstance(exc, UNREACHABLE):
                self.state.unreachable(self.clock())
            raise BusError(f"{doing}: {exc}") from None
