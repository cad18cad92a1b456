"""What a message carries (``File``, ``Post``), and the first lines of a long text to show
inline (``head``) when the whole text goes as a file.

``head`` cuts at a line boundary (a longer line at a space, else anywhere), and a code block
left open is closed, so the preview renders as the text would. Linear in what it reads.
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


def _parts(text: str, limit: int) -> Iterator[str]:
    """TEXT in parts of at most LIMIT characters, cut at line boundaries (a longer line at a
    space, else anywhere), code blocks closed at the end of a part and reopened, with their
    language, at the start of the next; whitespace-only parts dropped. Lazy: ``head`` needs
    only the first."""
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
