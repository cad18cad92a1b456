# ruff: noqa: F811  (pytest fixtures imported from tests.support.secret_service are parameters here)
"""dorch.secrets: lookup order (credentials dir, keyring, environment), errors, redaction.

The keyring is a real Secret Service (run under .ci/with-keyring, see tests/support/secret_service.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dorch import secrets
from dorch.config import ConfigError
from tests.support.secret_service import discord_token, secret_name, secret_service  # noqa: F401

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_outside_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for var in [v for v in os.environ if v.startswith(secrets.ENV_PREFIX)]:
        monkeypatch.delenv(var)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=str(Path(__file__).parent.parent))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(secrets.ENV_PREFIX) and k != "CREDENTIALS_DIRECTORY"}
    env.update(extra)
    return env


@pytest.mark.parametrize(("name", "var"), [
    ("discord-token", "DORCH_SECRET_DISCORD_TOKEN"),
    ("bot.2", "DORCH_SECRET_BOT_2"),
    ("Mixed_case-x", "DORCH_SECRET_MIXED_CASE_X"),
])
def test_environment_variable_name(name: str, var: str) -> None:
    assert secrets.env_var(name) == var


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", "-x", "a..b", "tok en"])
def test_names_that_cannot_be_a_file_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid secret name"):
        secrets.lookup_secret(name)


def test_credentials_dir_beats_keyring_beats_environment(
        secret_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cred = tmp_path / secret_name
    cred.write_text("from-credential\n")  # systemd-creds keeps the newline of `echo`
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    secrets.keyring_set(secret_name, "from-keyring")
    monkeypatch.setenv(secrets.env_var(secret_name), "from-environment")

    assert secrets.lookup_secret(secret_name) == "from-credential"
    assert secrets.find_secret(secret_name) == (secrets.CREDENTIALS, "from-credential")
    cred.unlink()
    assert secrets.lookup_secret(secret_name) == "from-keyring"
    assert secrets.keyring_delete(secret_name)
    with caplog.at_level(logging.WARNING, logger="dorch.secrets"):
        assert secrets.lookup_secret(secret_name) == "from-environment"
    assert "least safe" in caplog.text and secrets.env_var(secret_name) in caplog.text
    assert "from-environment" not in caplog.text


def test_survey_lists_every_place_that_has_it(secret_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets.keyring_set(secret_name, "in-keyring")
    monkeypatch.setenv(secrets.env_var(secret_name), "in-env")
    places = secrets.survey(secret_name)
    assert [p.source for p in places] == [secrets.CREDENTIALS, secrets.KEYRING, secrets.ENVIRONMENT]
    assert [p.value for p in places] == [None, "in-keyring", "in-env"]
    assert "in-keyring" not in repr(places)  # values stay out of reprs


def test_not_found_names_every_place_and_how_to_store(
        secret_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(secrets.SecretNotFound) as caught:
        secrets.lookup_secret(secret_name)
    text = str(caught.value)
    assert caught.value.exit_code == 78 and isinstance(caught.value, ConfigError)
    assert str(tmp_path / secret_name) in text and "no such file" in text
    assert "keyring" in text and "not stored" in text
    assert secrets.env_var(secret_name) in text
    assert f"dorch token set {secret_name}" in text and "--systemd" in text
    lines = text.splitlines()
    assert lines.index(next(x for x in lines if "systemd credential" in x)) < \
        lines.index(next(x for x in lines if "keyring" in x and "not stored" in x))


def test_not_found_without_systemd_says_why(secret_name: str) -> None:
    with pytest.raises(secrets.SecretNotFound, match=r"\$CREDENTIALS_DIRECTORY is not set"):
        secrets.lookup_secret(secret_name)


def test_empty_credential_is_not_a_secret(secret_name: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / secret_name).write_text("\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    secrets.keyring_set(secret_name, "kept")
    assert secrets.lookup_secret(secret_name) == "kept"
    assert secrets.survey(secret_name)[0].note == "present but empty"


def test_unreadable_credential_is_an_error_not_a_fallback(
        secret_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / secret_name).mkdir()  # there, but not readable as a file (even for root)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    secrets.keyring_set(secret_name, "older-token")
    with pytest.raises(secrets.SecretError, match="cannot read the credential") as caught:
        secrets.lookup_secret(secret_name)
    assert "older-token" not in str(caught.value)


def test_found_values_are_redacted_from_logs(tmp_path: Path) -> None:
    """Whatever the source, the value never reaches a log line, even when logged by mistake."""
    token, secret_name = discord_token(), "bot-token"
    (tmp_path / "cred").mkdir()
    (tmp_path / "cred" / secret_name).write_text(token + "\n")
    code = (
        "import logging, sys\n"
        "from dorch import log, secrets\n"
        "log.setup('debug')\n"
        f"for name in ({secret_name!r}, 'other'):\n"
        "    value = secrets.lookup_secret(name)\n"
        "    logging.getLogger('test').error('oops, the value: %s', value)\n"
        "    try:\n"
        "        raise RuntimeError(value)\n"
        "    except RuntimeError:\n"
        "        logging.getLogger('test').exception('and in a traceback')\n"
    )
    env = _clean_env(CREDENTIALS_DIRECTORY=str(tmp_path / "cred"),
                     DORCH_SECRET_OTHER="env-token-value-42")
    out = _python(code, env)
    assert out.returncode == 0, out.stderr
    assert "oops, the value: [redacted]" in out.stderr
    assert token not in out.stderr + out.stdout
    assert "env-token-value-42" not in out.stderr + out.stdout
    assert "least safe" in out.stderr  # the environment warning, without the value


def test_without_a_keyring_it_is_skipped_not_a_crash(tmp_path: Path) -> None:
    """A headless box: no D-Bus session, so keyring has only its `fail` backend."""
    env = _clean_env(XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    for var in ("DBUS_SESSION_BUS_ADDRESS", "PYTHON_KEYRING_BACKEND"):
        env.pop(var, None)
    code = ("from dorch import secrets\n"
            "print(secrets.find_secret('discord-token'))\n"
            "try:\n"
            "    secrets.lookup_secret('missing')\n"
            "except secrets.SecretNotFound as exc:\n"
            "    print(exc)\n")
    out = _python(code, {**env, "DORCH_SECRET_DISCORD_TOKEN": "headless-value"})
    assert out.returncode == 0, out.stderr
    assert "('environment', 'headless-value')" in out.stdout
    assert "no keyring backend available" in out.stdout
    assert "Traceback" not in out.stderr


def test_credentials_dir_does_not_import_keyring(tmp_path: Path) -> None:
    """The worker starts once per task: with its credential there, keyring is never loaded."""
    (tmp_path / "discord-token").write_text("x" * 20)
    code = ("import sys\n"
            "from dorch.secrets import lookup_secret\n"
            "assert lookup_secret('discord-token') == 'x' * 20\n"
            "print('keyring' in sys.modules)\n")
    out = _python(code, _clean_env(CREDENTIALS_DIRECTORY=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_keyring_delete_reports_absence(secret_name: str) -> None:
    assert secrets.keyring_delete(secret_name) is False
    secrets.keyring_set(secret_name, "v1")
    secrets.keyring_set(secret_name, "v2")  # replaces
    assert secrets.lookup_secret(secret_name) == "v2"
    assert secrets.keyring_delete(secret_name) is True
    assert secrets.find_secret(secret_name) is None


def test_discord_token_shape() -> None:
    good = discord_token(bot_id=987654321098765432)
    assert secrets.discord_token_problems(good) == []
    assert secrets.discord_token_bot_id(good) == 987654321098765432
    first, middle, last = good.split(".")

    def problem(token: str) -> str:
        found = secrets.discord_token_problems(token)
        assert found, f"{token!r} passed as a Discord token"
        return "; ".join(found)

    assert "'Bot '" in problem("Bot " + good)
    assert "whitespace" in problem(good[:10] + " " + good[10:])
    assert "2 dot-separated part(s)" in problem(f"{first}.{last}")
    assert "4 dot-separated" in problem(good + ".x")
    assert "outside base64url" in problem(f"{first}.{middle}.{last[:-3]}+/=")
    assert "second part is empty" in problem(f"{first}..{last}")
    assert "does not decode to a Discord user id" in problem(f"aGVsbG8.{middle}.{last}")
    assert "signature" in problem(f"{first}.{middle}.{last[:12]}")
    assert secrets.discord_token_bot_id("not-a-token") is None


def test_a_plain_text_keyring_is_refused_unless_allowed(tmp_path: Path) -> None:
    """keyrings.alt's PlaintextKeyring: keyring picks it on a headless box when installed."""
    data = tmp_path / "data"
    env = _clean_env(XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(data),
                     PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop(secrets.ALLOW_PLAINTEXT_KEYRING, None)
    store = ("from dorch import secrets\n"
             "try:\n"
             "    print(secrets.keyring_set('agent-key', 'plain-secret-value-7'))\n"
             "except secrets.KeyringUnavailable as exc:\n"
             "    print('refused:', exc)\n")
    out = _python(store, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "plain text" in out.stdout
    assert f"{secrets.ALLOW_PLAINTEXT_KEYRING}=1" in out.stdout
    written = [p.read_text() for p in data.rglob("*") if p.is_file()]
    assert not any("plain-secret-value-7" in w for w in written)

    allowed = {**env, secrets.ALLOW_PLAINTEXT_KEYRING: "1"}
    assert "refused" not in _python(store, allowed).stdout
    # what was stored there anyway is not read back unless allowed
    find = "from dorch import secrets\nprint(secrets.find_secret('agent-key'))\n"
    assert "plain-secret-value-7" in _python(find, allowed).stdout
    out = _python(find, env)
    assert out.returncode == 0 and "plain-secret-value-7" not in out.stdout + out.stderr
