"""Writes that must not be lost, delivered through the host's outbox (``outbox.py``).

Submissions, results, and re-posts (requeued, handed back, taken back from a squatter, dead,
blocked, cancelled) are stored before anything is sent and carry stable nonces: an outage
delays them, a retry never duplicates. ``deliver`` tries an item now and returns its response
(None while it waits for Discord); a configuration error raises.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dorch.bus import BusConfigError
from dorch.bus.discord import formats
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.gate import Gate
from dorch.bus.discord.guild import ARCHIVED_THREAD, Guild
from dorch.bus.discord.outbox import Item, Outbox, PermanentError
from dorch.bus.discord.poller import PAGE, snowflake_at
from dorch.bus.discord.reader import Reader
from dorch.discord import errors
from dorch.discord.content import File
from dorch.discord.types import Message
from dorch.model import Delivery, DeliveryKind, Result, State

log = logging.getLogger("dorch.bus.discord")

SUMMARY_MAX = 1900  # characters of a #results line


def _sub_nonce(item: Item, tag: str) -> str:
    """A second stable nonce for another post of the same outbox item."""
    return f"{item.nonce[:22]}-{tag}"


class Courier:
    """Puts writes into the outbox and delivers them (this bot's, and unowned ones)."""

    def __init__(self, outbox: Outbox, guild: Guild, gate: Gate, reader: Reader,
                 settings: Settings, token_id: str, clock: Callable[[], float]) -> None:
        self.outbox = outbox
        self.guild = guild
        self.client = guild.client
        self.gate = gate
        self.reader = reader
        self.settings = settings
        self.owner = token_id
        self.clock = clock
        self._handlers: dict[str, Callable[[Item], Awaitable[Any]]] = {
            "submit": self._submit, "result": self._result, "requeue": self._requeue}

    async def drain(self, limit: int = 20) -> None:
        """Deliver what waits in this host's outbox; stop at the first failure."""
        for _ in range(limit):
            attempt = await self.outbox.deliver_next(self._handlers, owner=self.owner)
            if attempt is None or attempt.error is not None:
                break

    async def deliver(self, item: Item) -> Any:
        """Try to deliver ITEM now (older due items go first); its response, None if it waits.
        A configuration error (token, permissions) raises BusConfigError."""
        failure: Exception | None = None
        for _ in range(50):
            response = self.outbox.response(item.id)
            if response is not None:
                return response
            attempt = await self.outbox.deliver_next(self._handlers, owner=self.owner)
            if attempt is None or attempt.error is not None:
                if attempt is not None and attempt.item.id == item.id:
                    failure = attempt.error
                break
        response = self.outbox.response(item.id)
        if response is None and failure is not None:
            log.warning("outbox item %d (%s) waits for Discord: %s", item.id, item.kind, failure)
        if isinstance(failure, errors.DiscordError) and failure.exit_code == errors.ExitCode.CONFIG:
            with self.guild.errors(f"delivering the {item.kind}"):
                raise failure
        if isinstance(failure, PermanentError) and isinstance(failure.__cause__, BusConfigError):
            raise failure.__cause__
        return response

    async def put(self, kind: str, payload: dict[str, Any], owner: str = "") -> Any:
        """Store a write and try to deliver it now: ``deliver``'s answer."""
        return await self.deliver(self.outbox.put(kind, payload, owner=owner))

    async def repost(self, msg: Message, source: str, attempt: int, why: str, *,
                     verb: str, handed_back: bool = False, limit: int | None = None,
                     orphan: bool = False) -> None:
        """Queue the re-post of a task this process won the compare-and-set for. ORPHAN: the
        compare-and-set deleted the task message itself (see ``_requeue``)."""
        limit = self.settings.max_attempts if limit is None else limit
        old = msg["id"]
        if not handed_back and attempt >= limit:
            payload: dict[str, Any] = {
                "old": old, "dead": True,
                "error": f"gave up after attempt {attempt} of {limit}: {why}"}
        else:
            payload = {"old": old, "text": source, "why": why, "verb": verb,
                       "attempt": attempt if handed_back else attempt + 1}
        payload["orphan"] = orphan
        payload["submitter"] = await self.gate.submitter(msg)
        await self.put("requeue", payload)

    def task_id(self, task_id: str) -> str | None:
        """The message id of task TASK_ID (``outbox-N``: once its submission was delivered)."""
        if not task_id.startswith("outbox-"):
            return task_id if task_id.isdigit() else None
        try:
            response = self.outbox.response(int(task_id[len("outbox-"):]))
        except ValueError:
            return None
        return str(response["id"]) if isinstance(response, dict) and "id" in response else None

    def waiting(self, task_id: str) -> bool:
        """Whether submission TASK_ID (``outbox-N``) still waits in this host's outbox."""
        return any(f"outbox-{i.id}" == task_id for i in self.outbox.pending())

    def result_waits(self, task_id: str, since: float) -> bool:
        """Whether a result of task TASK_ID, stored after SINCE, waits here to be posted."""
        return any(i.kind == "result" and i.payload.get("task") == task_id and i.created > since
                   for i in self.outbox.pending())

    def deliveries(self) -> list[Delivery]:
        """What waits in this host's outbox (and what it gave up on), for ``dorch status``."""
        out = []
        for item, failed in [(i, False) for i in self.outbox.pending()] + [
                (i, True) for i in self.outbox.failed()]:
            p = item.payload
            if item.kind == "submit":
                what = "task: " + " ".join(formats.split_header(p.get("content", ""))[0].split())[:60]
            elif item.kind == "result":
                what = f"result of task {p.get('task')} ({p.get('result', {}).get('state', '?')})"
            else:
                what = f"re-post of task {p.get('old')}"
            out.append(Delivery(item.id, DeliveryKind(item.kind), what, item.created, item.tries,
                                item.last_error, failed))
        return out

    # -- the handlers ------------------------------------------------------------------------

    async def _submit(self, item: Item) -> Any:
        files = [File.text(name, text) for name, text in item.payload.get("files", [])]
        resent = self.client.resent
        try:
            msg = await self.client.create_message(self.settings.task_channel,
                                                   item.payload["content"], files=files,
                                                   nonce=item.nonce)
        except (errors.Unauthorized, errors.Forbidden) as exc:
            # the user must fix the configuration and submit again: do not post it later too
            try:
                with self.guild.errors("submitting the task"):
                    raise exc
            except BusConfigError as config_error:
                raise PermanentError(str(config_error)) from config_error
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            # the nonce found an earlier try of ours that went through and is deleted since:
            # a worker took it back from a squatter (and re-posted it), or someone deleted it
            earlier = await self._squatted_copy(item.payload["content"], "")
            if earlier is None:
                raise PermanentError("the task was posted, then deleted before Discord's answer "
                                     "came back (not posted again): see #task-queue and "
                                     "#results") from None
            return {"id": earlier}
        return {"id": await self._one_copy(item, resent, item.payload["content"], msg["id"])}

    async def _one_copy(self, item: Item, resent: int, content: str, posted: str) -> str:
        """The task's id after posting CONTENT as POSTED: if an earlier try of this post got
        through (its answer lost) and was squatted and re-posted before the retry, the retry
        is a second copy (the nonce no longer finds the deleted first one): it is deleted and
        the first try's id returned (``get`` follows it to the re-post)."""
        if not item.tries and self.client.resent == resent:
            return posted
        earlier = await self._squatted_copy(content, posted)
        if earlier is None:
            return posted
        log.warning("task %s: an earlier try of this post (%s) went through and was squatted "
                    "and re-posted meanwhile; deleting this copy", posted, earlier)
        with contextlib.suppress(errors.NotFound):
            await self.client.delete_message(self.settings.task_channel, posted)
        return earlier

    async def _squatted_copy(self, content: str, posted: str) -> str | None:
        """The id of an earlier try of a submission whose answer was lost, if a worker took it
        back from a squatter and re-posted it before the retry: the nonce no longer finds a
        deleted message, so the retry (POSTED) is a second copy of the task."""
        body = formats.split_header(content)[0]
        fleet = await self.gate.fleet()
        recent = await self.client.list_messages(
            self.settings.task_channel, before=snowflake_at(self.clock() + 60), limit=PAGE)
        for m in recent:
            head, _, rest = (m.get("content") or "").partition("\n")
            if m["id"] != posted and fleet.wrote(m) and " · squatted " in head and rest == body \
                    and (origin := formats.parse_link(head)) is not None:
                return origin[2]
        return None

    async def _result(self, item: Item) -> Any:
        p = item.payload
        tid, receipt = p["task"], p["receipt"]
        r = p["result"]
        result = Result(State(r["state"]), r["output"], r["error"], r["stderr_tail"],
                        float(r["duration"]), dict(r["usage"]))
        # Fencing: the answer replaces the claim receipt, so only a holder whose receipt still
        # stands can post it (a reaper deletes the receipt first), and it takes one request.
        post = formats.result_post(result, p["worker"], self.settings.host, p["attempt"],
                                   self.settings.max_attempts)
        try:
            await self.client.edit_message(tid, receipt, post.content, files=post.files)
        except errors.NotFound:
            return {"fenced": True}
        except errors.BadRequest as exc:
            if exc.code == ARCHIVED_THREAD:
                return {"fenced": True}
            raise
        summary = formats.summary_text(result.state, self.guild.link(tid), p["worker"],
                                       result.duration, formats.first_line(result))
        await self.client.create_message(self.settings.results_channel, summary,
                                         nonce=_sub_nonce(item, "s"))
        ok = result.state is State.SUCCEEDED
        await self.guild.archive(tid, mark=formats.SUCCEEDED if ok else formats.FAILED,
                                 name=p.get("name", ""))
        return {"result": receipt}

    async def _summary(self, item: Item, text: str, files: list[File] | None = None) -> None:
        await self.client.create_message(self.settings.results_channel, text[:SUMMARY_MAX],
                                         files=files or [], nonce=_sub_nonce(item, "s"))

    async def _requeue(self, item: Item) -> Any:
        p = item.payload
        old = p["old"]
        link = self.guild.link
        if p.get("cancelled"):
            by = p.get("by", "?")
            if p.get("foreign"):  # a squatter's thread: it may be locked or gone
                await self.guild.foreign_note(old, formats.cancelled_note(by),
                                              _sub_nonce(item, "c"))
            else:
                await self.client.create_message(old, formats.cancelled_note(by),
                                                 nonce=_sub_nonce(item, "c"))
            where = link(old, old) if p.get("foreign") else link(old)
            await self._summary(item, formats.summary_text(
                State.CANCELLED, where, line=f"before it started (requested by {by})"))
            await self.guild.react(old, formats.FAILED)
            await self.guild.archive(old)
            return {"cancelled": old}
        if p.get("dead"):
            await self.client.create_message(old, formats.dead_note(p["error"]),
                                             nonce=_sub_nonce(item, "d"))
            await self._summary(item, f"{formats.DEAD} **dead** · {link(old)} · {p['error']}")
            await self.guild.react(old, formats.DEAD)
            await self.guild.archive(old)
            return {"dead": old}
        if p.get("verify") and await self.reader.taken_back(old):
            return {"dropped": old}
        if p.get("blocked"):
            error = p["blocked"]
            await self.guild.foreign_note(old, formats.rejected_note(error), _sub_nonce(item, "b"))
            files = [File.text(formats.TASK_FILE, p["text"])] if p.get("text") else []
            await self._summary(item, f"{formats.FAILED} **rejected** · {link(old, old)} · "
                                f"{error}", files)
            with contextlib.suppress(errors.DiscordHTTPError):
                await self.guild.archive(old)
            return {"blocked": old}
        if not p.get("orphan"):
            # A reaper that took this task as an orphan (this re-post was late: an outage, or
            # its worker died after winning) deleted the task message: it re-posts, not us.
            try:
                await self.client.get_message(self.settings.task_channel, old)
            except errors.NotFound:
                log.warning("task %s was re-queued by another worker meanwhile; dropping this "
                            "re-post", old)
                return {"dropped": old}
        header = formats.requeue_header(p["attempt"], link(old, old), p["verb"],
                                        p.get("squats", 0), p.get("submitter", ""))
        post = formats.task_post(p["text"], header)
        resent = self.client.resent
        try:
            new = await self.client.create_message(self.settings.task_channel, post.content,
                                                   files=post.files, nonce=item.nonce)
            new_id = await self._one_copy(item, resent, post.content, new["id"])
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            # an earlier try went through and was deleted since (squatted and taken back)
            earlier = await self._squatted_copy(post.content, "")
            if earlier is None:
                log.warning("task %s: its re-post went through and was deleted since; the "
                            "thread of the deleted copy tells the rest", old)
                return {"dropped": old}
            new_id = earlier
        note = formats.requeue_note(p["attempt"], link(new_id), p["why"])
        if p.get("foreign"):  # the squatter's thread: it may be locked or gone
            await self.guild.foreign_note(old, note, _sub_nonce(item, "n"))
            with contextlib.suppress(errors.DiscordHTTPError):
                await self.guild.archive(old)
            return {"id": new_id}
        await self.client.create_message(old, note, nonce=_sub_nonce(item, "n"))
        await self.guild.react(old, formats.REQUEUED)
        await self.guild.archive(old)
        return {"id": new_id}
