"""The domain model: a task, its attempts, results and views, and every state set as a StrEnum.

Executors, the workspace, the buses and the CLI import their types from here (not from a bus).

Lifecycle: queued -> claimed(running) -> succeeded | failed | timed_out | cancelled; an expired
lease (worker died or hung) makes the task ``lost`` and queues it again as attempt k+1, or
``dead`` after ``max_attempts``. ``release`` hands a task back without spending an attempt.

A task's text uses the inline-tag format of the original discord-orchestration scripts:

``Write a sort function [model:gpt-4o] [thinking:medium]``: tags may stand anywhere, are removed
from the prompt, and everything else is kept exactly. Tags inside code (backticks) are text, and
so is ``name[a:b]`` glued to a word, so prompts about slicing code are not mistaken for tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dorch.errors import InputError

THINKING_LEVELS = ("off", "minimal", "low", "medium", "high", "xhigh", "adaptive", "max", "ultra")
VALID_TAGS = ("model", "thinking")

# A tag: [word:value] not glued to a preceding word character or closing bracket.
_TAG = re.compile(r"(?<![\w\])])\[([A-Za-z][A-Za-z_-]*):([^\[\]\n]*)\]")
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
_MODEL = re.compile(r"^[\w.:/@+-]{1,200}$")


class TaskError(InputError, ValueError):
    """A task the user must fix; the text says what is wrong and how to write it instead."""


@dataclass(frozen=True)
class TaskSpec:
    """What to run: the prompt (tags removed), and the optional model and thinking level."""

    prompt: str
    model: str | None = None
    thinking: str | None = None

    def to_text(self) -> str:
        """The human-readable form with tags, as posted to #task-queue; parses back to self."""
        tags = []
        if self.model:
            tags.append(f"[model:{self.model}]")
        if self.thinking:
            tags.append(f"[thinking:{self.thinking}]")
        if not tags:
            return self.prompt
        if "\n" in self.prompt or "`" in self.prompt:
            return " ".join(tags) + "\n" + self.prompt  # a line of only tags parses away whole
        return self.prompt + " " + " ".join(tags)


def _code_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _CODE.finditer(text)]


def _in_spans(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def parse_task(text: str, model: str | None = None, thinking: str | None = None) -> TaskSpec:
    """Parse TEXT with inline tags; explicit ``model``/``thinking`` win over tags. Raises TaskError."""
    spans = _code_spans(text)
    found: dict[str, str] = {}
    by_line: dict[int, list[re.Match[str]]] = {}
    for m in _TAG.finditer(text):
        if _in_spans(m.start(), spans):
            continue
        name, value = m.group(1).lower(), m.group(2).strip()
        if name not in VALID_TAGS:
            raise TaskError(
                f"unknown tag [{m.group(1)}:{m.group(2)}]; valid tags are "
                + ", ".join(f"[{t}:...]" for t in VALID_TAGS)
                + " (write the bracket inside backticks to keep it as text)"
            )
        if not value:
            raise TaskError(f"empty tag [{m.group(1)}:]; give a value, e.g. [{name}:...]")
        if name in found and found[name] != value:
            raise TaskError(
                f"conflicting tags: [{name}:{found[name]}] and [{name}:{value}]; keep one of them"
            )
        found[name] = value
        by_line.setdefault(text.rfind("\n", 0, m.start()) + 1, []).append(m)
    prompt = _remove_tags(text, by_line)
    chosen_model = model if model is not None else found.get("model")
    chosen_thinking = thinking if thinking is not None else found.get("thinking")
    return validate(TaskSpec(prompt, chosen_model or None, chosen_thinking or None))


def _remove_tags(text: str, by_line: dict[int, list[re.Match[str]]]) -> str:
    """Cut the tags out. A line holding only tags goes whole (with its newline); otherwise each
    tag goes with the blanks before it (or after it, when it opens the line)."""
    cuts: list[tuple[int, int]] = []
    for line_start, tags in by_line.items():
        line_end = text.find("\n", line_start)
        line_end = len(text) if line_end < 0 else line_end
        rest = text[line_start:line_end]
        for m in reversed(tags):
            rest = rest[: m.start() - line_start] + rest[m.end() - line_start :]
        if not rest.strip(" \t"):
            cuts.append((line_start, min(line_end + 1, len(text))))
            continue
        prev, leading = line_start, True
        for m in tags:
            start, end = m.start(), m.end()
            leading = leading and not text[prev:start].strip(" \t")
            if leading:
                start = prev
                while end < line_end and text[end] in " \t":
                    end += 1
            else:
                while start > prev and text[start - 1] in " \t":
                    start -= 1
            cuts.append((start, end))
            prev = end
    out, last = [], 0
    for start, end in sorted(cuts):
        start = max(start, last)
        out.append(text[last:start])
        last = max(last, end)
    out.append(text[last:])
    return "".join(out)


def validate(spec: TaskSpec) -> TaskSpec:
    """Check a spec; returns it with the thinking level normalised to lower case."""
    if not spec.prompt.strip():
        raise TaskError("the prompt is empty; write what the agent should do")
    if "\x00" in spec.prompt:
        raise TaskError("the prompt contains a NUL byte; send text, not binary data")
    thinking = spec.thinking.lower() if spec.thinking else None
    if thinking is not None and thinking not in THINKING_LEVELS:
        raise TaskError(
            f"unknown thinking level {spec.thinking!r}; use one of: " + ", ".join(THINKING_LEVELS)
        )
    if spec.model is not None and not _MODEL.match(spec.model):
        raise TaskError(
            f"invalid model name {spec.model!r}; use provider/model (e.g. openai/gpt-4o) or an "
            "alias from [models]"
        )
    return TaskSpec(spec.prompt, spec.model, thinking)


def resolve_model(model: str | None, aliases: dict[str, str]) -> str | None:
    """Map a model alias from the ``[models]`` config section to its provider/model name."""
    if model is None:
        return None
    return aliases.get(model, model)


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def finished(self) -> bool:
        return self not in (State.QUEUED, State.RUNNING)


class Lease(StrEnum):
    """What a heartbeat learns about a claim."""

    HELD = "held"            # keep going
    CANCELLED = "cancelled"  # the user cancelled: stop the agent, report cancelled
    LOST = "lost"            # fenced (lease expired and taken): stop, report nothing


@dataclass(frozen=True)
class Task:
    id: str
    spec: TaskSpec
    attempt: int = 1
    submitter: str = ""
    submitted_at: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A worker's lease on a task. ``token`` fences: only the holder of the current one may finish."""

    task: Task
    worker: str
    token: str
    lease_until: float


@dataclass
class Result:
    """The outcome of one attempt, as the worker reports it."""

    state: State
    output: str = ""
    error: str = ""
    stderr_tail: str = ""
    duration: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskView:
    """A task as the CLI shows it: its spec, where it stands, and its result once finished."""

    task: Task
    state: State
    worker: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    result: Result | None = None
    url: str = ""


@dataclass
class WorkerView:
    worker: str
    state: WorkerState
    task_id: str = ""
    host: str = ""
    pid: int = 0
    version: str = ""
    tasks_done: int = 0
    updated_at: float = 0.0


@dataclass
class Delivery:
    """A write waiting in this host's outbox (Discord bus): a submission, a result, a requeue."""

    id: int
    kind: DeliveryKind
    what: str           # one line for people
    created: float
    tries: int
    last_error: str = ""
    failed: bool = False  # gave up (retrying cannot help); kept for inspection


@dataclass
class Status:
    counts: dict[str, int]
    running: list[TaskView]
    recent: list[TaskView]
    dead: list[TaskView]
    workers: list[WorkerView]
    deliveries: list[Delivery] = field(default_factory=list)
    error: str = ""     # the bus could not be read (only the local part is shown)

    @property
    def pending_delivery(self) -> int:
        return len(self.deliveries)


class WorkerState(StrEnum):
    """A worker as #worker-pool and ``dorch status`` show it."""

    READY = "READY"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    STOPPED = "STOPPED"
    LOST = "LOST"            # its task was taken back (lease expired)


class DeliveryKind(StrEnum):
    """What a write waiting in a host's outbox (Discord bus) will do."""

    SUBMIT = "submit"
    RESULT = "result"
    REQUEUE = "requeue"
