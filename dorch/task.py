"""The task model: parsing the inline-tag format of the original discord-orchestration scripts.

``Write a sort function [model:gpt-4o] [thinking:medium]``: tags may stand anywhere, are removed
from the prompt, and everything else is kept exactly. Tags inside code (backticks) are text, and
so is ``name[a:b]`` glued to a word, so prompts about slicing code are not mistaken for tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINKING_LEVELS = ("off", "minimal", "low", "medium", "high", "xhigh", "adaptive", "max", "ultra")
VALID_TAGS = ("model", "thinking")

# A tag: [word:value] not glued to a preceding word character or closing bracket.
_TAG = re.compile(r"(?<![\w\])])\[([A-Za-z][A-Za-z_-]*):([^\[\]\n]*)\]")
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
_MODEL = re.compile(r"^[\w.:/@+-]{1,200}$")


class TaskError(ValueError):
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
