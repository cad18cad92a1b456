"""Showing the head of agent output is linear in what it reads: one huge line (an agent's whole
answer without a newline) costs milliseconds, not the minutes of a quadratic cut."""

from __future__ import annotations

import pytest

from dorch.discord.content import head


@pytest.mark.timeout(60)   # the quadratic cut took 8.8 s for 16 MB, so hours for 64 MB
def test_a_64_mb_line_is_headed_in_linear_time() -> None:
    line = ("word " * 13_421_773)[: 64 * 1024 * 1024]
    first = head(line, 1500)
    assert line.startswith(first) and 750 <= len(first) <= 1500
    unbroken = "z" * (16 * 1024 * 1024)
    assert head(unbroken, 1500) == "z" * len(head(unbroken, 1500))
