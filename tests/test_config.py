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
    assert cfg.file == system and cfg.values["executor"]["kind"] == "echo"
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


# -- writing TOML (`dorch setup`, `dorch config show`) -------------------------------------------

TRICKY = ['say "hi"', "back\\slash C:\\temp", "two\nlines\r\n", "tab\tbell\x07del\x7fnul\x00",
          "ünïcødé 🚀 日本", "'single' '''triple'''", "", "#not a comment", "[not] = a table"]


def test_what_the_toml_writer_writes_reads_back_the_same() -> None:
    import math
    import tomllib

    doc = {
        "strings": {"plain": "x", **{f"s{i}": s for i, s in enumerate(TRICKY)}},
        "numbers": {"int": 42, "negative": -7, "big": 2**63 - 1, "zero": 0, "float": 0.1,
                    "whole": 5.0, "tiny": 1e-07, "huge": 1.5e300, "inf": math.inf,
                    "ninf": -math.inf},
        "bools": {"yes": True, "no": False},
        "lists": {"empty": [], "ints": [1, 2, 3], "strings": TRICKY, "nested": [[1, 2], ["a"]],
                  "tables": [{"a": 1}, {"b": "two"}]},
        "tables": {"empty": {}, "inline": {"input": 2.5, "output": 10},
                   "nested": {"deeper": {"deepest": ["x", True]}},
                   "keys": {"anthropic/claude-sonnet-4.5": 1, "with space": 2, "ü": 3, "": 4,
                            'quote"d': 5, "bare_key-1": 6}},
    }
    text = "\n".join(f"[{section}]\n" + "\n".join(
        f"{config.toml_key(k)} = {config.toml_value(v)}" for k, v in keys.items()) + "\n"
        for section, keys in doc.items())
    assert tomllib.loads(text) == doc
    assert math.isnan(tomllib.loads(f"x = {config.toml_value(math.nan)}")["x"])
    with pytest.raises(TypeError, match="TOML has no value"):
        config.toml_value(None)


def test_config_show_prints_toml_that_reads_back_as_the_effective_values(tmp_path: Path) -> None:
    """`dorch config show > my.toml` is a config: a model alias with a dot, a price for a model
    named with a slash and an argv with any character all read back as they were."""
    import json
    import tomllib

    from tests.support.helpers import DORCH

    argv = ["/bin/echo", *TRICKY[:5]]
    argv_toml = json.dumps(argv, ensure_ascii=False).replace(chr(0x7f), "\\u007f")
    path = tmp_path / "c.toml"
    path.write_text(f"""
[executor.command]
argv = {argv_toml}

[models]
"sonnet-4.5" = "anthropic/claude-sonnet-4-5"

[prices]
"anthropic/claude-sonnet-4-5" = {{ input = 3, output = 15 }}
""", encoding="utf-8")
    show = [DORCH, "--config", str(path), "config", "show"]
    text = subprocess.run(show, capture_output=True, text=True, timeout=60, check=True).stdout
    values = json.loads(subprocess.run([*show, "--json"], capture_output=True, text=True,
                                       timeout=60, check=True).stdout)["values"]
    shown = tomllib.loads(text)
    for dotted, keys in values.items():
        table = shown
        for part in dotted.split("."):
            table = table.get(part, {})
        assert {k: v for k, v in table.items() if k in keys} == keys, dotted
    assert shown["executor"]["command"]["argv"] == argv
    assert shown["models"] == {"sonnet-4.5": "anthropic/claude-sonnet-4-5"}
    assert shown["prices"] == {"anthropic/claude-sonnet-4-5": {"input": 3, "output": 15}}
