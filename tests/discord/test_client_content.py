"""The first lines of a long text, shown inline while the whole text goes as a file: cut at a
line boundary, code blocks kept valid."""

from __future__ import annotations

import re

from dorch.discord.content import MAX_CONTENT, head

FENCE_LINE = re.compile(r"^```[\w+#.\-]*$")


def test_short_text_is_its_own_head_and_blank_text_has_none() -> None:
    assert head("hello", MAX_CONTENT) == "hello"
    assert head("   \n", MAX_CONTENT) == ""


def test_the_head_fits_and_ends_at_a_line_end() -> None:
    lines = [f"line {i}: " + "x" * (i % 70) for i in range(400)]
    text = "\n".join(lines) + "\n"
    first = head(text, MAX_CONTENT)
    assert 0 < len(first) <= MAX_CONTENT
    assert text.startswith(first)  # no code blocks: nothing added
    assert first.endswith("\n")  # cut at a line end only


def test_a_code_block_cut_by_the_head_is_closed() -> None:
    code = "".join(f"    value_{i} = compute({i})  # step {i}\n" for i in range(150))
    text = "Result:\n```python\n" + code + "```\nDone.\n"
    first = head(text, MAX_CONTENT)
    assert len(first) <= MAX_CONTENT
    assert first.count("```") % 2 == 0, first  # renders as valid markdown
    assert first.startswith("Result:\n```python\n") and first.endswith("```")
    body = [ln for ln in first.splitlines() if not FENCE_LINE.match(ln)]
    assert body == [ln for ln in text.splitlines() if not FENCE_LINE.match(ln)][:len(body)]


def test_a_line_longer_than_the_head_is_cut_at_a_space() -> None:
    text = " ".join(f"word{i}" for i in range(1200))
    first = head(text, MAX_CONTENT)
    assert len(first) <= MAX_CONTENT and text.startswith(first) and first.endswith(" ")


def test_a_line_without_spaces_is_cut_anywhere() -> None:
    text = "a" * 4500
    first = head(text, MAX_CONTENT)
    assert first == "a" * len(first) and MAX_CONTENT // 2 <= len(first) <= MAX_CONTENT
