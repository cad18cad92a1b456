"""Config: search order, environment overrides, provenance, one clear error (exit 78) per mistake."""

import base64
import logging
import subprocess
from pathlib import Path

import pytest

from dorch import config
from dorch.config import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DORCH_CONFIG", "DORCH_POLL_INTERVAL", "DORCH_MAX_IDLE_TIME", "DORCH_WORKER_ID",
                "INVOCATION_ID", "DORCH_DISCORD_API_BASE", "DORCH_TOKEN_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DORCH_CONFIG_DIR", str(tmp_path / "userconf"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file() -> None:
    cfg = config.load()
    assert cfg.file is None
    assert cfg.bus_kind == "local"
    assert cfg.worker["poll_interval"] == 5.0
    assert cfg.worker["max_idle_time"] == 300.0
    assert cfg.discord["api_base"] == "https://discord.com/api/v10"
    assert cfg.sources["worker.poll_interval"] == "default"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = write(tmp_path / "userconf" / "config.toml", "[worker]\npoll_interval = 2\n")
    assert config.load().file == user
    env_file = write(tmp_path / "env.toml", "[worker]\npoll_interval = 3\n")
    monkeypatch.setenv("DORCH_CONFIG", str(env_file))
    assert config.load().worker["poll_interval"] == 3.0
    explicit = write(tmp_path / "explicit.toml", "[worker]\npoll_interval = 4\n")
    cfg = config.load(explicit)
    assert cfg.worker["poll_interval"] == 4.0
    assert cfg.sources["worker.poll_interval"] == str(explicit)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "c.toml", "[worker]\npoll_interval = 9\nmax_idle_time = 10\n")
    monkeypatch.setenv("DORCH_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("DORCH_WORKER_ID", "box-7")
    cfg = config.load(f)
    assert cfg.worker["poll_interval"] == 0.5
    assert cfg.sources["worker.poll_interval"] == "$DORCH_POLL_INTERVAL"
    assert cfg.worker["id"] == "box-7"
    assert cfg.worker["max_idle_time"] == 10.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\npoll_interval = 'fast'\n", r"\[worker\] poll_interval: expected a number"),
        ("[worker]\npol_interval = 1\n", r"\[worker\] pol_interval: unknown key; valid keys:"),
        ("[wrker]\nx = 1\n", r"\[wrker\]: unknown section; valid sections: bus"),
        ("[bus]\nkind = 'carrier-pigeon'\n", r"\[bus\] kind: 'carrier-pigeon' is not one of"),
        ("[worker]\nmax_attempts = -1\n", r"max_attempts: must not be negative"),
        ("[worker]\nheartbeat_seconds = 60\nlease_seconds = 30\n", "must be less than"),
        ("[bus]\nkind = 'discord'\n", r"\[discord\] guild_id: required"),
        ("[discord]\nguild_id = 'abc'\n", r"\[discord\] guild_id: expected a Discord id"),
        ("[models]\ncheap = 3\n", r"\[models\] cheap: expected a model name"),
        ("bus = 1\n", "expected a \\[bus\\] table"),
        ("[worker\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=message) as info:
        config.load(f)
    assert str(f) in str(info.value)
    assert info.value.exit_code == 78


def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DORCH_POLL_INTERVAL", "soon")
    with pytest.raises(ConfigError, match=r"\$DORCH_POLL_INTERVAL: expected a number"):
        config.load()


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")


def test_nested_executor_sections_and_ids(tmp_path: Path) -> None:
    f = write(tmp_path / "c.toml", """
[bus]
kind = "discord"
[discord]
guild_id = "123"
task_channel = 1
results_channel = 2
pool_channel = 3
allowed_submitters = ["42", 43]
[executor]
kind = "openclaw"
[executor.openclaw]
path = "/opt/openclaw/bin/openclaw"
[models]
cheap = "openrouter/tiny"
""")
    cfg = config.load(f)
    assert cfg.discord["guild_id"] == 123
    assert cfg.discord["allowed_submitters"] == [42, 43]
    assert cfg.values["executor.openclaw"]["path"] == "/opt/openclaw/bin/openclaw"
    assert cfg.models == {"cheap": "openrouter/tiny"}


# -- a service reads /etc/dorch/config.toml only -------------------------------------------------

def test_a_service_ignores_planted_user_and_env_configs(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent wrote ~/.config/dorch/config.toml in the service's home: the next worker ran
    its argv. Under systemd only --config and /etc/dorch/config.toml count."""
    planted = '[executor]\nkind = "command"\n[executor.command]\nargv = ["/tmp/evil"]\n'
    write(tmp_path / "userconf" / "config.toml", planted)
    monkeypatch.setenv("DORCH_CONFIG", str(write(tmp_path / "env.toml", planted)))
    system = write(tmp_path / "etc" / "config.toml", '[executor]\nkind = "echo"\n')
    monkeypatch.setattr(config, "SYSTEM_CONFIG", system)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    cfg = config.load()
    assert cfg.file == system and cfg.get("executor", "kind") == "echo"
    system.unlink()
    assert config.load().file is None  # built-in defaults, still not the planted file
    pinned = write(tmp_path / "pinned.toml", '[executor]\nkind = "echo"\n')
    assert config.load(pinned).file == pinned  # the unit's --config


# -- config safety -------------------------------------------------------------------------------

def looks_like_a_bot_token() -> str:
    user = base64.urlsafe_b64encode(b"123456789012345678").decode().rstrip("=")
    return f"{user}.GhJk3A.{'aB3_-' * 7}"


@pytest.mark.parametrize("value", [looks_like_a_bot_token(), "Bot " + looks_like_a_bot_token()])
def test_a_bot_token_in_place_of_its_name_is_refused_and_never_shown(
        tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "c.toml", f'[discord]\ntoken = "{value}"\n')
    with pytest.raises(ConfigError, match="this is a token, not the name of a credential") as exc:
        config.load(path)
    assert looks_like_a_bot_token() not in str(exc.value)
    assert looks_like_a_bot_token()[:20] not in str(exc.value)


def test_a_credential_name_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[discord]\ntoken = "discord-token-2"\n')
    assert config.load(path).discord["token"] == "discord-token-2"


def test_the_cli_never_echoes_a_token_given_as_the_name(tmp_path: Path) -> None:
    from tests.support.helpers import DORCH

    path = write(tmp_path / "c.toml", f'[discord]\ntoken = "{looks_like_a_bot_token()}"\n')
    out = subprocess.run([DORCH, "--config", str(path), "config", "show"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 78
    assert "this is a token" in out.stderr
    assert looks_like_a_bot_token()[:20] not in out.stdout + out.stderr


@pytest.mark.parametrize("url", ["http://discord.example.com/api/v10",
                                 "http://10.0.0.7:8080/api/v10", "ftp://discord.com/api",
                                 "discord.com/api/v10"])
def test_api_base_must_be_https(tmp_path: Path, url: str) -> None:
    path = write(tmp_path / "c.toml", f'[discord]\napi_base = "{url}"\n')
    with pytest.raises(ConfigError, match=r"\[discord\] api_base"):
        config.load(path)


@pytest.mark.parametrize("url", ["https://discord.com/api/v10", "http://127.0.0.1:5000/api/v10",
                                 "http://localhost:8080/api/v10", "http://[::1]:80/api"])
def test_api_base_https_or_loopback_is_fine(tmp_path: Path, url: str) -> None:
    path = write(tmp_path / "c.toml", f'[discord]\napi_base = "{url}"\n')
    assert config.load(path).discord["api_base"] == url


def test_allow_insecure_http_overrides_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "c.toml", '[discord]\napi_base = "http://proxy.lan/api/v10"\n'
                 'allow_insecure_http = true\n')
    with caplog.at_level(logging.WARNING, logger="dorch.config"):
        assert config.load(path).discord["api_base"] == "http://proxy.lan/api/v10"
    assert "unencrypted" in caplog.text
