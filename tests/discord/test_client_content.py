"""Fitting long text into 2000-character messages: split at lines, code blocks kept valid."""

from __future__ import annotations

import re

import pytest

from dorch.discord.content import MAX_CONTENT, fit, split, with_attachment

FENCE_LINE = re.compile(r"^```[\w+#.\-]*$")


def test_short_text_is_one_part_and_empty_none() -> None:
    assert split("hello") == ["hello"]
    assert split("   \n") == []


def test_every_part_fits_and_lines_are_kept_whole() -> None:
    lines = [f"line {i}: " + "x" * (i % 70) for i in range(400)]
    text = "\n".join(lines) + "\n"
    parts = split(text)
    assert len(parts) > 1
    assert all(len(p) <= MAX_CONTENT for p in parts)
    assert "".join(parts) == text  # no code blocks: nothing added, nothing lost
    assert all(p.endswith("\n") for p in parts)  # cut at line ends only


def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_language() -> None:
    code = "".join(f"    value_{i} = compute({i})  # step {i}\n" for i in range(150))
    text = "Result:\n```python\n" + code + "```\nDone.\n"
    parts = split(text)
    assert len(parts) >= 3
    assert all(len(p) <= MAX_CONTENT for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part  # every part renders as valid markdown
    for part in parts[1:-1]:
        assert part.startswith("```python\n") and part.endswith("```")
    assert parts[-1].startswith("```python\n") and parts[-1].endswith("Done.\n")
    # nothing lost: the body lines all come back in order
    body = [ln for p in parts for ln in p.splitlines() if not FENCE_LINE.match(ln)]
    assert body == [ln for ln in text.splitlines() if not FENCE_LINE.match(ln)]


def test_a_line_longer_than_a_message_is_cut_at_spaces() -> None:
    text = " ".join(f"word{i}" for i in range(1200))
    parts = split(text)
    assert all(len(p) <= MAX_CONTENT for p in parts)
    assert "".join(parts) == text
    assert all(p.endswith(" ") for p in parts[:-1])


def test_a_line_without_spaces_is_cut_anywhere() -> None:
    text = "a" * 4500
    parts = split(text)
    assert "".join(parts) == text and all(len(p) <= MAX_CONTENT for p in parts)


def test_with_attachment_keeps_the_whole_text_in_the_file() -> None:
    text = "```\n" + "\n".join(f"row {i}" for i in range(2000)) + "\n```\n"
    post = with_attachment(text, "result.md")
    assert len(post.content) <= MAX_CONTENT
    assert post.content.count("```") % 2 == 0
    assert "result.md" in post.content and str(len(text)) in post.content
    (file,) = post.files
    assert file.filename == "result.md" and file.data.decode() == text


@pytest.mark.parametrize(("size", "kind"), [(100, "one"), (5000, "split"), (50_000, "attach")])
def test_fit_chooses(size: int, kind: str) -> None:
    text = "\n".join("x" * 99 for _ in range(size // 100))
    posts = fit(text, max_messages=4)
    if kind == "one":
        assert [p.content for p in posts] == [text] and not posts[0].files
    elif kind == "split":
        assert 1 < len(posts) <= 4 and not any(p.files for p in posts)
    else:
        assert len(posts) == 1 and posts[0].files[0].data.decode() == text
