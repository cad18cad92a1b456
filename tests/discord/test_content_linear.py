"""Fitting agent output into messages is linear in its size: one huge line (an agent's whole
answer without a newline) costs seconds, not the minutes of a quadratic cut."""

from __future__ import annotations

import pytest

from dorch.discord.content import MAX_CONTENT, head, split


@pytest.mark.timeout(60)   # the quadratic cut took 8.8 s for 16 MB, so hours for 64 MB
def test_a_64_mb_line_is_split_and_headed_in_linear_time() -> None:
    line = ("word " * 13_421_773)[: 64 * 1024 * 1024]
    parts = split(line)
    assert all(len(p) <= MAX_CONTENT for p in parts)
    assert "".join(parts) == line
    first = head(line, 1500)
    assert first == parts[0][: len(first)] and 750 <= len(first) <= 1500
    unbroken = "z" * (16 * 1024 * 1024)
    assert "".join(split(unbroken)) == unbroken
