"""Token usage and cost of one task: what ``Result.usage`` holds, and the one-line summary.

``Result.usage`` keys (all optional): ``provider``, ``model``, ``input_tokens``,
``output_tokens``, ``cache_read_tokens``, ``cache_write_tokens``, ``total_tokens``,
``duration`` (seconds), ``cost_usd`` and ``summary`` (the line below, for readers that do not
import dorch, e.g. a Discord post).

Prices come from the config's ``[prices]`` table, in dollars per million tokens::

    [prices]
    "anthropic/claude-sonnet-4-6" = { input = 3.0, output = 15.0 }

A model is looked up as ``provider/model``, then as ``model`` alone. Cache reads and writes are
charged at the input price: an upper bound, since the table has no separate cache prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PER = 1_000_000


Prices = Mapping[str, Mapping[str, float]]


def price_for(usage: Mapping[str, Any], prices: Prices) -> Mapping[str, float] | None:
    """The ``[prices]`` entry for the usage's model, or None when the config does not price it."""
    model = str(usage.get("model") or "")
    provider = str(usage.get("provider") or "")
    if not model:
        return None
    for key in (f"{provider}/{model}" if provider else "", model):
        if key and key in prices:
            return prices[key]
    return None


def cost(usage: Mapping[str, Any], prices: Prices) -> float | None:
    """The task's cost in dollars, or None when the model has no price or no token counts."""
    price = price_for(usage, prices)
    if price is None:
        return None
    tokens_in = sum(_count(usage, k) for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens"))
    tokens_out = _count(usage, "output_tokens")
    if tokens_in == 0 and tokens_out == 0:
        return None
    return (tokens_in * float(price.get("input", 0)) + tokens_out * float(price.get("output", 0))) / PER


def summary(usage: Mapping[str, Any]) -> str:
    """One line: ``fake/fake-model · 1,000 in + 500 out tokens · 6.2 s · $0.0070``."""
    parts: list[str] = []
    model = str(usage.get("model") or "")
    provider = str(usage.get("provider") or "")
    if model:
        parts.append(f"{provider}/{model}" if provider else model)
    if "input_tokens" in usage or "output_tokens" in usage:
        tokens = f"{_count(usage, 'input_tokens'):,} in + {_count(usage, 'output_tokens'):,} out tokens"
        cached = _count(usage, "cache_read_tokens")
        parts.append(tokens + (f" ({cached:,} cached)" if cached else ""))
    duration = usage.get("duration")
    if isinstance(duration, int | float) and duration > 0:
        parts.append(f"{duration:.1f} s")
    dollars = usage.get("cost_usd")
    if isinstance(dollars, int | float):
        parts.append(format_dollars(float(dollars)))
    return " · ".join(parts)


def format_dollars(amount: float) -> str:
    """Cents above a cent, more decimals below: $1.25, $0.0070, $0.000012."""
    if amount == 0:
        return "$0.00"
    if amount >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.4f}" if amount >= 0.0001 else f"${amount:.6f}"


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
