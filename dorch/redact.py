"""Redaction: every secret dorch knows is written as ``[redacted]``, never as itself.

Values are registered once, when found (``dorch.secrets`` registers the bot token and every
agent secret it reads). ``redact`` then hides them in what dorch writes from an agent's output
(the worker redacts a task's Result before the bus, the outbox and RESULT.md see it) and in every
log line (``dorch.log``). An agent that prints a secret, by mistake or because a prompt injection
told it to, gets ``[redacted]`` posted instead.

Besides the plain value, ``redact`` finds:

- the value broken by whitespace or line breaks (wrapped or folded output);
- a piece of at least ``FRAGMENT`` characters of it ending a line or the text (the value's
  start, where a cut of the output or a line break fell) or starting one (its end: a tail);
- its URL-encoded form, and its base64 forms (standard and URL-safe, at the three alignments;
  the one or two characters at each end that also depend on the neighbouring bytes remain).

Every step is a regular-expression scan or ``str.find`` over the text, with no backtracking
(possessive quantifiers): the cost is linear in the text's length, so megabytes of output cost
milliseconds.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from dorch.model import Result

MARK = "[redacted]"
MIN_LENGTH = 4    # shorter values are not secrets worth blanking ordinary words for
FRAGMENT = 8      # the shortest piece of a secret hidden at a line's or the text's edge
PIECE_MAX = 160   # longer pieces are found by their first PIECE_MAX characters alone
_B64_MIN = 12     # shorter base64 cores would match by chance


def _forms(value: str) -> set[str]:
    """VALUE and the encodings of it that an agent might print."""
    forms = {value, quote(value, safe="")}
    raw = value.encode("utf-8")
    for pad in range(3):
        text = base64.b64encode(b"\0" * pad + raw).decode("ascii")
        # characters made only of VALUE's bits, whatever surrounds it in a longer stream
        core = text[-(-8 * pad // 6):(8 * (pad + len(raw))) // 6]
        if len(core) >= _B64_MIN:
            forms.add(core)
            forms.add(core.translate(str.maketrans("+/", "-_")))
    return forms


def _spaced(form: str) -> re.Pattern[str]:
    """FORM, also when whitespace or line breaks fall between any two of its characters (its
    own whitespace, if any, counts as such: a possessive run would swallow it)."""
    return re.compile(r"\s*+".join(re.escape(c) for c in form if not c.isspace()))


class Redactor:
    """A set of secrets and the patterns that find them; ``redact`` hides them in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []
        self._heads: list[re.Pattern[str]] = []   # a value's start ending a line
        self._tails: list[re.Pattern[str]] = []   # the same for reversed values: its end
        self._lock = threading.Lock()
        for value in secrets:
            self.add(value)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def add(self, value: str) -> None:
        """Hide VALUE from now on (values shorter than MIN_LENGTH are ignored)."""
        if len(value) < MIN_LENGTH or value in self._secrets:
            return
        with self._lock:
            self._secrets.add(value)
            forms = {f for s in self._secrets for f in _forms(s)}
            # longest first, so a value that contains another is hidden whole
            self._patterns = [_spaced(f) for f in sorted(forms, key=len, reverse=True)]
            long = [s for s in self._secrets if len(s) > FRAGMENT]
            self._heads = [p for s in long for p in _cut_pieces(s)]
            self._tails = [p for s in long for p in _cut_pieces(s[::-1])]

    def redact(self, text: str) -> str:
        """TEXT with every known secret, and every piece of one at a line's edge, as MARK."""
        if not text or not self._secrets:
            return text
        for pattern in self._patterns:
            text = pattern.sub(MARK, text)
        for pattern in self._heads:
            text = pattern.sub(MARK, text)
        if self._tails:
            # a value's end starting a line is its reversed start ending a line of the reversed text
            backwards = text[::-1]
            for pattern in self._tails:
                backwards = pattern.sub(MARK[::-1], backwards)
            text = backwards[::-1]
        return text


def _cut_pieces(value: str) -> list[re.Pattern[str]]:
    """Patterns for VALUE's start where a cut left it: its first FRAGMENT to PIECE_MAX characters
    ending a line (or the text); and, for a longer VALUE, its first PIECE_MAX characters anywhere
    with the rest of their word (that many characters of a secret are never there by chance).

    Possessive: if the longest piece is not followed by a line's end, no shorter one is (a secret
    has no whitespace), so a match attempt reads at most PIECE_MAX characters."""
    rest = ""
    for c in reversed(value[FRAGMENT:PIECE_MAX]):
        rest = f"(?:{re.escape(c)}{rest})?+"
    patterns = [re.compile(re.escape(value[:FRAGMENT]) + rest + r"(?=[ \t\r\f\v]*+(?:\n|\Z))")]
    if len(value) > PIECE_MAX:
        patterns.append(re.compile(re.escape(value[:PIECE_MAX]) + r"\S*+"))
    return patterns


_known = Redactor()


def register(value: str) -> None:
    """Hide VALUE everywhere from now on: logs, results, posts (tokens, API keys)."""
    _known.add(value)


def redact(text: str) -> str:
    """TEXT with every secret registered in this process replaced by ``[redacted]``."""
    return _known.redact(text)


def redact_result(result: Result) -> Result:
    """RESULT with the agent's output, error and stderr redacted (in place; also returned)."""
    if _known:
        result.output = redact(result.output)
        result.error = redact(result.error)
        result.stderr_tail = redact(result.stderr_tail)
        result.usage = _redact_data(result.usage)
    return result


def _redact_data(data: Any) -> Any:
    """DATA (JSON-like: what an executor parsed from the agent's report) with strings redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact(str(k)): _redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_redact_data(v) for v in data]
    return data
