"""Messages and their attachments turned into tasks.

A person's task is its text plus its text attachments (each under a ``--- name ---`` line; a
lone ``message.txt`` is the task itself); a task the fleet re-posted carries its attempt in its
header and its whole text as ``task.md`` when long. Attachments are read to their end and
checked against their declared size: a short read is a temporary error, never a cut task.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from dorch.bus import BusError
from dorch.bus.discord import formats, trust
from dorch.bus.discord.gate import Gate, thread_created
from dorch.discord.types import Attachment, Message
from dorch.model import Task, TaskError, TaskSpec, parse_task, validate

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("dorch.bus.discord")

ATTACHMENT_CAP = 100_000  # bytes of text attachments a human's task may carry
TASK_FILE_CAP = 8 << 20  # bytes of a task.md or result.md dorch writes (Discord takes 10 MiB)
_ATTACHMENT_SECTION = re.compile(r"\n\n--- [^\n]+ ---\n")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml",
               "application/yaml", "application/toml", "application/javascript")
_TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".rst", ".py", ".js", ".ts", ".json", ".yaml",
                    ".yml", ".toml", ".ini", ".cfg", ".csv", ".tsv", ".log", ".sh", ".c", ".h",
                    ".cc", ".cpp", ".hpp", ".rs", ".go", ".java", ".kt", ".rb", ".php", ".sql",
                    ".html", ".css", ".xml", ".diff", ".patch")


class Rejected(TaskError):
    """A task that cannot run as written; the text tells its author what to fix."""


def is_text(attachment: Attachment) -> bool:
    kind = str(attachment.get("content_type") or "").lower()
    name = str(attachment.get("filename") or "").lower()
    return kind.startswith(_TEXT_TYPES) or name.endswith(_TEXT_EXTENSIONS)


def parse(source: str) -> TaskSpec:
    """The spec of a task text: tags are read before its first attachment section only,
    so code or notes in an attachment are never mistaken for tags. Raises TaskError."""
    found = _ATTACHMENT_SECTION.search(source)
    lead, rest = (source[:found.start()], source[found.start():]) if found else (source, "")
    spec = parse_task(lead) if lead.strip() or not rest else TaskSpec(rest.strip("\n"))
    if lead.strip() and rest:
        spec = TaskSpec(spec.prompt + rest, spec.model, spec.thinking)
    return validate(spec)


def view_spec(msg: Message) -> tuple[TaskSpec, int]:
    """A best-effort spec for showing a task (no downloads, never raises)."""
    content = msg.get("content") or ""
    attempt = 1
    if (msg.get("author") or {}).get("bot"):
        content, attempt = formats.split_header(content)
    try:
        return parse(content), attempt
    except TaskError:
        return TaskSpec(content or "(attachment)"), attempt


class Intake:
    """Reads tasks out of messages (downloading attachments from Discord's CDN)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._cdn: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._cdn is not None:
            await self._cdn.close()

    async def download(self, attachment: Attachment, cap: int) -> str:
        """An attachment's text, read to its end and checked against its declared size: a
        short read is a temporary error (BusError), never a cut text. Over CAP: Rejected."""
        import aiohttp

        if self._cdn is None:
            self._cdn = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        name = attachment.get("filename", "?")
        try:
            declared = int(attachment.get("size"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            declared = -1
        if declared > cap:
            raise Rejected(f"the attachment {name} holds {declared:,} bytes; the Discord bus "
                           f"takes at most {cap:,} bytes there")
        chunks: list[bytes] = []
        got = 0
        try:
            async with self._cdn.get(attachment["url"]) as resp:
                if resp.status != 200:
                    raise BusError(f"downloading attachment {name}: HTTP {resp.status}")
                async for chunk in resp.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    got += len(chunk)
                    if got > cap:
                        raise Rejected(f"the attachment {name} is larger than {cap:,} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BusError(f"downloading attachment {name}: {type(exc).__name__} after "
                           f"{got:,} bytes") from None
        if declared >= 0 and got != declared:
            raise BusError(f"downloading attachment {name}: got {got:,} of its {declared:,} "
                           "bytes; try again")
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(f"the attachment {name} is not UTF-8 text") from None

    async def source(self, msg: Message) -> tuple[str, int]:
        """(task text as it would be re-posted, attempt) of a task message. Raises Rejected."""
        content = msg.get("content") or ""
        attachments = msg.get("attachments") or []
        if (msg.get("author") or {}).get("bot"):
            body, attempt = formats.split_header(content)
            if not (await self.gate.fleet()).wrote(msg):
                attempt = 1  # only the fleet re-posts tasks: another bot's "attempt 3" is a lie
            task_file = next((a for a in attachments if a.get("filename") == formats.TASK_FILE),
                             None)
            if task_file is not None:
                body = await self.download(task_file, TASK_FILE_CAP)
            return body, attempt
        texts = [a for a in attachments if is_text(a)]
        skipped = [a.get("filename", "?") for a in attachments if not is_text(a)]
        if skipped:
            log.info("task %s: not text, not part of the prompt: %s", msg["id"], ", ".join(skipped))
        total = sum(int(a.get("size") or 0) for a in texts)
        if total > ATTACHMENT_CAP:
            raise Rejected(
                f"its text attachments hold {total:,} bytes; dorch takes at most "
                f"{ATTACHMENT_CAP:,} bytes of attachments per task. Split the task, or put "
                "the material somewhere the agent can read it and say where"
            )
        if len(texts) == 1 and not content.strip():
            # Discord's app turns a long typed message into message.txt: it is the task itself.
            return await self.download(texts[0], ATTACHMENT_CAP), 1
        sections = [f"\n\n--- {a.get('filename', 'attachment')} ---\n"
                    + await self.download(a, ATTACHMENT_CAP) for a in texts]
        return content + "".join(sections), 1

    async def shown(self, msg: Message, task_id: str = "") -> Task:
        """The task MSG carries, as shown (no downloads). A person may edit a task after a
        worker took it: the text shown then is the start of the one that ran (the thread's
        name), marked, never the edited text as if it had run."""
        spec, attempt = view_spec(msg)
        thread = msg.get("thread")
        edited = trust.epoch(msg.get("edited_timestamp"))
        if thread and edited and edited > thread_created(thread) > 0 \
                and not (msg.get("author") or {}).get("bot") \
                and (await self.gate.fleet()).owns(thread):
            ran = str(thread.get("name") or "").partition(": ")[2]
            spec = TaskSpec(f"{ran}{'…' if len(ran) >= 60 else ''} [edited after it started: "
                            "this is how the text that ran began]", spec.model, spec.thinking)
        return Task(task_id or str(msg["id"]), spec, attempt, await self.gate.submitter(msg),
                    trust.epoch(msg.get("timestamp")))
