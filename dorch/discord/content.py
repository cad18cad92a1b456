"""Fitting text into Discord messages (2000 characters each) without losing any of it.

Two ways, for the bus to choose: ``split`` cuts at line boundaries into several messages (a
code block cut in two is closed at the end of one part and reopened, with its language, at the
start of the next); ``with_attachment`` sends the whole text as a file with the first lines
inline. ``fit`` picks: one message if it fits, a few split parts, else the attachment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_CONTENT = 2000
FENCE = "```"
_LANG = re.compile(r"[\w+#.\-]{1,30}")


@dataclass(frozen=True)
class File:
    """A file to upload with a message (``files[n]`` in a multipart request)."""

    filename: str
    data: bytes = field(repr=False)
    content_type: str = "text/plain; charset=utf-8"
    description: str = ""

    @classmethod
    def text(cls, filename: str, text: str, description: str = "") -> File:
        return cls(filename, text.encode("utf-8"), "text/plain; charset=utf-8", description)


@dataclass(frozen=True)
class Post:
    """One message to create: content and files."""

    content: str
    files: tuple[File, ...] = ()


def _reopen(fence_line: str) -> str:
    """What reopens a code block opened by FENCE_LINE: the fence and its language, if any."""
    rest = fence_line.strip()[len(FENCE):] if fence_line.strip().startswith(FENCE) else ""
    return FENCE + (rest if _LANG.fullmatch(rest) else "")


def _pieces(line: str, budget: int) -> Iterator[str]:
    """LINE cut into pieces of at most BUDGET characters, at the last space where possible.
    Linear in the line's length: offsets move, the rest of the line is never copied."""
    start, end = 0, len(line)
    while end - start > budget:
        cut = line.rfind(" ", start + budget // 2, start + budget)
        cut = cut + 1 if cut > start else start + budget
        yield line[start:cut]
        start = cut
    yield line[start:] if start else line


# str.splitlines()'s line boundaries, found one at a time (a lazy splitlines(keepends=True))
_LINE_END = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> Iterator[str]:
    pos = 0
    for match in _LINE_END.finditer(text):
        yield text[pos:match.end()]
        pos = match.end()
    if pos < len(text):
        yield text[pos:]


def split(text: str, limit: int = MAX_CONTENT) -> list[str]:
    """TEXT in parts of at most LIMIT characters, cut at line boundaries (a longer line at a
    space, else anywhere). Code blocks stay valid in every part. Only whitespace-only parts
    are dropped (Discord refuses empty messages). Linear in the text's length."""
    return list(_parts(text, limit))


def _parts(text: str, limit: int) -> Iterator[str]:
    """The parts of ``split``, one at a time (``head`` needs only the first)."""
    if limit < 100:
        raise ValueError("limit must be at least 100 characters")
    if len(text) <= limit:
        if text.strip():
            yield text
        return
    cur: list[str] = []      # the pieces of the part being built, and their total length
    size = 0
    fence: str | None = None  # the reopening fence while inside a code block

    def flush() -> str | None:
        nonlocal cur, size
        out = "".join(cur)
        if fence is not None:
            out += ("" if out.endswith("\n") else "\n") + FENCE
        cur = [fence + "\n"] if fence is not None else []
        size = len(cur[0]) if cur else 0
        if out.strip() and out.strip() != (fence or "").strip() + "\n" + FENCE:
            return out
        return None

    for line in _lines(text):
        prefix = len(fence) + 1 if fence is not None else 0
        budget = max(limit - prefix - len(FENCE) - 1, limit // 2)
        for piece in _pieces(line, budget):
            after = fence
            if piece.count(FENCE) % 2:
                after = None if fence is not None else _reopen(piece)
            closing = (len(FENCE) + (0 if piece.endswith("\n") else 1)) if after is not None else 0
            if size and size + len(piece) + closing > limit:
                part = flush()
                if part is not None:
                    yield part
            cur.append(piece)
            size += len(piece)
            fence = after
    part = flush()
    if part is not None:
        yield part


def head(text: str, limit: int) -> str:
    """The first lines of TEXT within LIMIT characters (a code block left open is closed).
    Reads only as much of TEXT as the first part needs."""
    return next(_parts(text, limit), "")


def with_attachment(text: str, filename: str = "output.md", preview: int = 1500,
                    note: str = "") -> Post:
    """TEXT as a file, with its first lines (at most PREVIEW characters) and a note inline."""
    if not 100 <= preview <= MAX_CONTENT - 200:
        raise ValueError(f"preview must be between 100 and {MAX_CONTENT - 200} characters")
    shown = head(text, preview) if len(text) > preview else text
    note = note or f"-# full text ({len(text)} characters) attached as {filename}"
    content = f"{shown.rstrip()}\n{note}" if shown.strip() else note
    return Post(content[:MAX_CONTENT], (File.text(filename, text),))


def fit(text: str, *, max_messages: int = 4, filename: str = "output.md",
        preview: int = 1500) -> list[Post]:
    """The posts that carry TEXT: one message if it fits, up to MAX_MESSAGES split parts, or a
    single message with the whole text attached as FILENAME."""
    parts = split(text)
    if len(parts) <= max_messages:
        return [Post(p) for p in parts]
    return [with_attachment(text, filename, preview)]
