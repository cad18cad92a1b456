"""dorch.redact: what an agent prints of a secret never comes out of dorch as the secret."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from dorch.model import Result, State
from dorch.redact import MARK, Redactor

KEY = "sk-ant-api03-Qm9vT2xkU2VjcmV0S2V5Rm9yVGVzdHMtMDEyMzQ1Njc4OQ-xYz_AA"
BOT = "MTEyMjMzNDQ1NTY2Nzc4ODk5.GaBcDe.aaB1cc2DDe3ff4GGh5ii6JJk7ll8MMn9oo0"


@pytest.fixture
def r() -> Redactor:
    return Redactor([KEY, BOT])


def test_plain_values_anywhere(r: Redactor) -> None:
    text = f"key={KEY}; token:{BOT}{BOT}\n"
    assert r.redact(text) == f"key={MARK}; token:{MARK}{MARK}\n"


def test_ordinary_text_is_left_alone(r: Redactor) -> None:
    text = "sk-ant- is how Anthropic keys start; MTEy\nGaBcDe\n" + KEY[:7] + "\n"
    assert r.redact(text) == text
    assert Redactor([]).redact(KEY) == KEY
    assert Redactor(["abc"]).redact("abc") == "abc"  # too short to be worth hiding


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\n    ", " ", "\t"])
def test_a_value_broken_by_line_breaks_or_spaces(r: Redactor, sep: str) -> None:
    text = f"folded: {KEY[:20]}{sep}{KEY[20:50]}{sep}{KEY[50:]} end"
    assert r.redact(text) == f"folded: {MARK} end"


def test_pieces_left_at_a_cut(r: Redactor) -> None:
    # the output was cut in the middle of the key: its start ends the text, or the last line
    assert r.redact("answer: " + KEY[:30]) == "answer: " + MARK
    assert r.redact("answer: " + KEY[:30] + "  \n[output cut at 4 MB]") == \
        "answer: " + MARK + "  \n[output cut at 4 MB]"
    # a tail of stderr starts in the middle of the token
    assert r.redact(BOT[-25:] + "\nTraceback") == MARK + "\nTraceback"
    assert r.redact("x\n  " + BOT[-9:]) == "x\n  " + MARK
    # pieces shorter than 8 characters, or not at a line's edge, stay
    assert r.redact("answer: " + KEY[:7]) == "answer: " + KEY[:7]
    assert r.redact(KEY[:30] + " and more") == KEY[:30] + " and more"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc"])
def test_base64_and_url_encoded_forms(r: Redactor, prefix: bytes) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(prefix + BOT.encode() + b"!").decode()
        out = r.redact("b64: " + encoded)
        assert MARK in out and len(out) < len("b64: ") + len(MARK) + 8
    wrapped = base64.encodebytes(b"token=" + KEY.encode()).decode()  # 76 columns, like base64(1)
    assert "\n" in wrapped.strip()
    assert MARK in r.redact(wrapped) and KEY[20:40] not in base64.b64decode(
        r.redact(wrapped).replace(MARK, "").encode() + b"===", validate=False).decode("latin-1")
    quoted = urllib.parse.quote("a/" + KEY + "+x", safe="")
    assert r.redact(quoted) == "a%2F" + MARK + "%2Bx"


def test_result_fields_are_redacted() -> None:
    from dorch import redact

    redact.register(KEY)
    result = Result(State.FAILED, output=f"here: {KEY}", error=f"agent exited: {KEY[:20]}",
                    stderr_tail=f"{KEY[-12:]}\nbye",
                    usage={"note": KEY, "tokens": 3, "models": [{"name": KEY}]})
    assert redact.redact_result(result) is result
    assert (result.output, result.error) == (f"here: {MARK}", f"agent exited: {MARK}")
    assert result.stderr_tail == f"{MARK}\nbye"
    assert result.usage == {"note": MARK, "tokens": 3, "models": [{"name": MARK}]}


@pytest.mark.timeout(60)
def test_megabytes_of_near_misses_stay_cheap(r: Redactor) -> None:
    """Linear in the text: 16 MB of the worst inputs (a quadratic scan would take hours)."""
    size = 16 << 20
    for unit in (KEY[:-1] + "\n", BOT[:9] + " ", "s", "\n", " ".join(KEY[:20]) + " ",
                 KEY[-9:] + KEY[:9]):
        text = unit * (size // len(unit))
        out = r.redact(text)
        assert KEY not in out and BOT not in out


def test_a_secret_with_spaces_is_found_too() -> None:
    r = Redactor(["correct horse battery staple"])
    assert r.redact("pw: correct horse battery staple!") == f"pw: {MARK}!"
    assert r.redact("pw: correct horse\n  battery staple") == f"pw: {MARK}"


def test_a_long_secret_and_its_pieces() -> None:
    """A secret of thousands of characters (a key file's content) compiles and is found whole,
    cut short, or cut at its start."""
    value = base64.b64encode(bytes(range(256)) * 12).decode()  # 4096 characters
    r = Redactor([value])
    assert r.redact(f"key: {value}!") == f"key: {MARK}!"
    assert r.redact(f"key: {value[:3000]}\n[cut]") == f"key: {MARK}\n[cut]"
    assert r.redact(f"key: {value[:100]}\n") == f"key: {MARK}\n"
    assert r.redact(f"{value[-1000:]}\ntail") == f"{MARK}\ntail"


def test_a_piece_after_other_text_on_its_line(r: Redactor) -> None:
    assert r.redact(f"sk-ant-api03-example,{KEY[:30]}\n") == f"sk-ant-api03-example,{MARK}\n"


def test_commands_that_set_up_no_logging_redact_too() -> None:
    """Most commands never call dorch.log.setup: Python's last-resort handler prints their
    warnings, through the redacting formatter too."""
    import subprocess
    import sys

    code = ("import logging\n"
            "from dorch import log, redact\n"
            "redact.register('value-of-a-secret-123')\n"
            "logging.getLogger('dorch.x').warning('it is %s', 'value-of-a-secret-123')\n"
            "try:\n"
            "    raise RuntimeError('value-of-a-secret-123')\n"
            "except RuntimeError:\n"
            "    logging.getLogger('dorch.x').exception('and in a traceback')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "it is [redacted]\n" in out.stderr and "RuntimeError: [redacted]" in out.stderr
    assert "value-of-a-secret-123" not in out.stderr
