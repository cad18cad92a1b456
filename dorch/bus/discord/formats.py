"""What dorch's Discord messages look like, and how they are read back.

Every message is written for people first (a task is its prompt with its tags; a result is the
answer) and carries a fixed marker at the start of its first line, so the bus can read it back:

- task (in #task-queue): the prompt as typed. A task dorch re-posts starts with a subtext line
  ``-# dorch · attempt 2 · requeued from <link>``; a long one carries its full text as
  ``task.md`` with the first lines inline.
- claim receipt (first dorch message of a task's thread, the fencing token):
  ``🔒 claimed by **W** on HOST · attempt 1/3 · lease until <t:EPOCH:R>``
- result (the claim receipt, edited: one request posts the answer and proves the lease was
  still held): ``🏁 **succeeded** in 1.2 s · **W** on HOST · attempt 1/3 · usage`` then the
  answer (inline, or ``result.md`` with the first lines inline); failures add ``error:`` and the
  stderr tail.
- notes (thread): ``♻️ ... re-queued as attempt 2: <link>``, ``☠️ **dead** ...``,
  ``❌ **rejected**: why``, ``🛑 **cancelled** before it started``.
- summary (#results): ``🏁 **succeeded** · <link> · **W** · 1.2 s · first line``.
- board (#worker-pool): ``🔵 **W** RUNNING <link> · host · pid 42 · dorch 0.1.0 · 3 tasks done ·
  <t:E:R>``.

These markers are believed only from the right account (``trust.py``): a fleet bot's notes,
the claimer's receipt and result; anything else that reads like them is noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dorch.discord.content import MAX_CONTENT, File, Post, head
from dorch.model import Result, State

# Marks on a task message (reactions; a finished task's in front of its thread's name).
SUCCEEDED = "🏁"
FAILED = "❌"
REQUEUED = "♻️"
DEAD = "☠️"
STOP = "🛑"

TASK_INLINE_MAX = 1900  # a task longer than this goes as task.md with its first lines inline
TASK_PREVIEW = 1500
RESULT_PREVIEW = 1200
TASK_FILE = "task.md"
RESULT_FILE = "result.md"
ERROR_MAX = 300
HEADER = "-# dorch · "

_HEADER_ATTEMPT = re.compile(r"^-# dorch · attempt (\d+)\b")
_HEADER_SUBMITTER = re.compile(r"^-# dorch · (?:[^\n]* · )?submitted by ([^·\n]+)")
_HEADER_SQUATS = re.compile(r"^-# dorch · attempt \d+ · squatted (\d+)\b")
_LINK = re.compile(r"https://discord\.com/channels/(\d+)/(\d+)/(\d+)")
RECEIPT = re.compile(
    r"^🔒 claimed by \*\*(?P<worker>[^*\n]+)\*\* on (?P<host>[^ \n]+) · attempt "
    r"(?P<attempt>\d+)/(?P<max>\d+) · lease until <t:(?P<until>\d+):R>"
)
RESULT = re.compile(
    r"^\S+ \*\*(?P<state>succeeded|failed|timed_out|cancelled)\*\* in (?P<duration>[\d.]+) s"
    r" · \*\*(?P<worker>[^*\n]+)\*\*"
)
REJECTED = re.compile(r"^❌ \*\*rejected\*\*: (?P<error>.*)")
CANCELLED_QUEUED = re.compile(r"^🛑 \*\*cancelled\*\* before it started")
REQUEUE_NOTE = re.compile(r"^♻️ .*re-queued as attempt (?P<attempt>\d+): (?P<link>\S+)")
DEAD_NOTE = re.compile(r"^☠️ \*\*dead\*\*: (?P<error>.*)")
SUMMARY = re.compile(
    r"^\S+ \*\*(?P<state>succeeded|failed|timed_out|cancelled|dead|rejected)\*\* · "
    r"(?P<link>\S+)(?: · \*\*(?P<worker>[^*\n]+)\*\*)?(?: · (?P<duration>[\d.]+) s)?"
    r"(?: · (?P<line>.*))?$"
)
BOARD = re.compile(
    r"^\S+ \*\*(?P<worker>[^*\n]+)\*\* (?P<state>READY|RUNNING|RESTARTING|STOPPED)"
    r"(?: (?P<link>https://\S+))? · (?P<host>[^·\n]+?) · (?:pid (?P<pid>\d+) · )?"
    r"dorch (?P<version>\S+) · "
    r"(?P<done>\d+) tasks? done · <t:(?P<at>\d+):R>"
)
_STATE_EMOJI = {
    State.SUCCEEDED: SUCCEEDED, State.FAILED: FAILED, State.TIMED_OUT: "⏱️",
    State.CANCELLED: STOP, State.DEAD: DEAD,
}
_BOARD_EMOJI = {"READY": "🟢", "RUNNING": "🔵", "RESTARTING": "🟡", "STOPPED": "⚫"}


def same_emoji(a: str, b: str) -> bool:
    """Emoji equality ignoring the variation selector (Discord may drop or add U+FE0F)."""
    return a.replace("\ufe0f", "") == b.replace("\ufe0f", "")


def link(guild: int | str, channel: int | str, message: int | str) -> str:
    """A jump link to a message (or, with channel = message = thread id, to a thread)."""
    return f"https://discord.com/channels/{guild}/{channel}/{message}"


def parse_link(text: str) -> tuple[str, str, str] | None:
    """(guild, channel, message) of the first jump link in TEXT."""
    found = _LINK.search(text)
    return (found.group(1), found.group(2), found.group(3)) if found else None


def clean_name(name: str) -> str:
    """A worker or host name that cannot break the markdown markers."""
    return re.sub(r"[*`\n·<>]", "_", name).strip() or "?"


# -- tasks ------------------------------------------------------------------------------------

def task_post(text: str, header: str = "") -> Post:
    """The message carrying a task: TEXT (prompt with tags), after an optional subtext HEADER."""
    lead = f"{HEADER}{header}\n" if header else ""
    if len(lead) + len(text) <= TASK_INLINE_MAX and text.strip():
        return Post(lead + text)
    shown = head(text, TASK_PREVIEW).rstrip()
    note = f"-# full task ({len(text)} characters) in {TASK_FILE}"
    return Post(f"{lead}{shown}\n{note}", (File.text(TASK_FILE, text),))


def split_header(content: str) -> tuple[str, int]:
    """(body, attempt) of a bot-written task: the ``-# dorch ·`` line removed, its attempt read."""
    first, _, rest = content.partition("\n")
    if not first.startswith(HEADER):
        return content, 1
    found = _HEADER_ATTEMPT.match(first)
    return rest, int(found.group(1)) if found else 1


def requeue_header(attempt: int, origin: str, why: str, squats: int = 0,
                   submitter: str = "") -> str:
    squatted = f"squatted {squats} · " if squats else ""
    by = f" · submitted by {clean_name(submitter)}" if submitter else ""
    return f"attempt {attempt} · {squatted}{why} from {origin}{by}"


def submitter_of(content: str) -> str:
    """Who submitted a task dorch posted (``submitted by X`` in its header), or ""."""
    found = _HEADER_SUBMITTER.match(content)
    return found.group(1).strip() if found else ""


def squats(content: str) -> int:
    """How many times threads from outside the fleet were started on this task before (the
    header of a task dorch re-posted; only believed from a fleet bot)."""
    found = _HEADER_SQUATS.match(content)
    return int(found.group(1)) if found else 0


# -- claim receipts -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Receipt:
    worker: str
    host: str
    attempt: int
    max_attempts: int
    lease_until: int


def receipt_text(worker: str, host: str, attempt: int, max_attempts: int, lease_until: float,
                 note: str = "") -> str:
    until = math.ceil(lease_until)
    text = (f"🔒 claimed by **{clean_name(worker)}** on {clean_name(host).replace(' ', '_')} · "
            f"attempt {attempt}/{max_attempts} · lease until <t:{until}:R>")
    return f"{text}\n{note}" if note else text


def parse_receipt(content: str) -> Receipt | None:
    found = RECEIPT.match(content)
    if not found:
        return None
    return Receipt(found["worker"], found["host"], int(found["attempt"]), int(found["max"]),
                   int(found["until"]))


# -- results ------------------------------------------------------------------------------------

def _usage_line(result: Result) -> str:
    summary = result.usage.get("summary") if isinstance(result.usage, dict) else None
    return f" · {summary}" if summary else ""


def result_post(result: Result, worker: str, host: str = "", attempt: int = 0,
                max_attempts: int = 0) -> Post:
    """The result message in the thread (the claim receipt, edited): a header, then the answer
    or the error."""
    state = result.state
    where = f" on {clean_name(host).replace(' ', '_')}" if host else ""
    tries = f" · attempt {attempt}/{max_attempts}" if attempt else ""
    title = (f"{_STATE_EMOJI.get(state, FAILED)} **{state.value}** in {result.duration:.1f} s · "
             f"**{clean_name(worker)}**{where}{tries}{_usage_line(result)}")
    output = result.output
    if state is State.SUCCEEDED:
        if len(title) + 1 + len(output) <= MAX_CONTENT and output.strip():
            return Post(f"{title}\n{output}")
        if not output.strip():
            return Post(f"{title}\n-# (no output)")
        preview = head(output, RESULT_PREVIEW).rstrip()
        note = f"-# full answer ({len(output)} characters) attached as {RESULT_FILE}"
        return Post(f"{title}\n{preview}\n{note}", (File.text(RESULT_FILE, output),))
    error = " ".join((result.error or state.value).split())[:ERROR_MAX]
    lines = [title, f"error: {error}"]
    files: tuple[File, ...] = ()
    if output.strip():
        files = (File.text(RESULT_FILE, output),)
        lines.append(f"-# output ({len(output)} characters) attached as {RESULT_FILE}")
    tail = result.stderr_tail.replace("```", "'''").strip("\n")
    if tail:
        room = MAX_CONTENT - len("\n".join(lines)) - 40
        if len(tail) > room:
            tail = tail[-room:]
        lines += ["-# stderr (last lines):", f"```text\n{tail}\n```"]
    return Post("\n".join(lines), files)


def parse_result(content: str) -> tuple[Result, str] | None:
    """(Result without an attached output, worker) from a result message; None if not one."""
    first, _, body = content.partition("\n")
    found = RESULT.match(first)
    if not found:
        return None
    state = State(found["state"])
    result = Result(state, duration=float(found["duration"]))
    if state is State.SUCCEEDED:
        if not body.startswith("-# (no output)") and not _attached_note(body):
            result.output = body
        elif _attached_note(body):
            result.output = ""  # in result.md
        return result, found["worker"]
    for line in body.split("\n"):
        if line.startswith("error: "):
            result.error = line[len("error: "):]
            break
    tail = re.search(r"```text\n(.*)\n```", body, re.DOTALL)
    if tail:
        result.stderr_tail = tail.group(1)
    return result, found["worker"]


def _attached_note(body: str) -> bool:
    last = body.rstrip("\n").rsplit("\n", 1)[-1]
    return last.startswith("-# full answer (") and last.endswith(f"attached as {RESULT_FILE}")


def summary_text(state: State, task_link: str, worker: str = "", duration: float | None = None,
                 line: str = "") -> str:
    """One line in #results for a finished (or dead, or rejected) task."""
    emoji = SUCCEEDED if state is State.SUCCEEDED else _STATE_EMOJI.get(state, FAILED)
    label = state.value
    parts = [f"{emoji} **{label}**", task_link]
    if worker:
        parts.append(f"**{clean_name(worker)}**")
    if duration is not None:
        parts.append(f"{duration:.1f} s")
    short = " ".join(line.split())
    if short:
        parts.append(short[:200] + ("…" if len(short) > 200 else ""))
    return " · ".join(parts)


def first_line(result: Result) -> str:
    text = result.output if result.state is State.SUCCEEDED else (result.error or "")
    for candidate in text.splitlines():
        if candidate.strip():
            return candidate.strip()
    return ""


# -- notes ---------------------------------------------------------------------------------------

def requeue_note(new_attempt: int, new_link: str, why: str) -> str:
    return f"♻️ {why}; re-queued as attempt {new_attempt}: {new_link}"


def dead_note(error: str) -> str:
    return f"☠️ **dead**: {error}"


def rejected_note(error: str) -> str:
    return (f"❌ **rejected**: {' '.join(error.split())[:1500]}\n"
            "-# Fix the task and post it again; this one will not run.")


def cancelled_note(by: str) -> str:
    return f"🛑 **cancelled** before it started (requested by {by}); it will not run."


# -- the worker board -----------------------------------------------------------------------------

def board_text(worker: str, state: str, host: str, version: str, done: int, at: float,
               task_link: str = "", pid: int = 0) -> str:
    emoji = _BOARD_EMOJI.get(state, "⚪")
    where = f" {task_link}" if state == "RUNNING" and task_link else ""
    plural = "task" if done == 1 else "tasks"
    proc = f"pid {pid} · " if pid else ""
    return (f"{emoji} **{clean_name(worker)}** {state}{where} · {clean_name(host)} · {proc}"
            f"dorch {version} · {done} {plural} done · <t:{int(at)}:R>")
