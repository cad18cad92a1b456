"""Config: search order, environment overrides, provenance, one clear error (exit 78) per mistake."""

from pathlib import Path

import pytest

from dorch import config
from dorch.config import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DORCH_CONFIG", "DORCH_POLL_INTERVAL", "DORCH_MAX_IDLE_TIME", "DORCH_WORKER_ID"):
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
