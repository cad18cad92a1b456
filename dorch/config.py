"""Configuration: one TOML file, environment overrides, and where each value came from.

Search order: ``--config PATH``, ``$DORCH_CONFIG``, the user config dir, ``/etc/dorch/config.toml``.
The first file found is used; nothing found means built-in defaults. A service (run by systemd)
reads ``--config`` or ``/etc/dorch/config.toml`` only: its home and environment are where an
agent could plant a config. Every value remembers its
source so ``dorch config show`` can explain it, and every mistake names the file and the key.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dorch import paths
from dorch.errors import ConfigError  # defined there, the root of the 78s; imported from here too

log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/dorch/config.toml")
DEFAULT_API_BASE = "https://discord.com/api/v10"


@dataclass(frozen=True)
class Key:
    """One setting: its type, its default, and an optional environment override."""

    type: type | tuple[type, ...]
    default: Any
    env: str | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""


_ID = (int, str)  # Discord snowflakes may be written as numbers or strings

SCHEMA: dict[str, dict[str, Key]] = {
    "bus": {
        "kind": Key(str, "local", env="DORCH_BUS", choices=("local", "discord"),
                    help="which bus carries tasks"),
    },
    "local": {
        "path": Key(str, "", env="DORCH_LOCAL_PATH",
                    help="SQLite file of the local bus (default: the data dir)"),
    },
    "discord": {
        "api_base": Key(str, DEFAULT_API_BASE, env="DORCH_DISCORD_API_BASE",
                        help="REST base URL (proxies, the emulator); https unless loopback"),
        "allow_insecure_http": Key(bool, False, help="allow a plain-http api_base that is not "
                                   "loopback (the bot token then crosses the network in clear)"),
        "guild_id": Key(_ID, 0),
        "task_channel": Key(_ID, 0),
        "results_channel": Key(_ID, 0),
        "pool_channel": Key(_ID, 0),
        "token": Key(str, "discord-token", env="DORCH_TOKEN_NAME",
                     help="name of the credential holding the bot token (not the token)"),
        "allowed_submitters": Key(list, []),
        "fleet_bots": Key(list, [], help="user ids of the bots that run dorch workers (the "
                          "fleet): only their threads, receipts and notes are believed"),
        "allowed_roles": Key(list, []),
        "invalid_request_limit": Key(int, 2500, help="401/403/429 answers per 10 minutes per host "
                                     "before dorch stops sending (Discord bans at 10,000)"),
    },
    "worker": {
        "id": Key(str, "", env="DORCH_WORKER_ID", help="worker id (default: host-instance)"),
        "poll_interval": Key(float, 5.0, env="DORCH_POLL_INTERVAL"),
        "max_idle_time": Key(float, 300.0, env="DORCH_MAX_IDLE_TIME"),
        "lease_seconds": Key(float, 60.0, env="DORCH_LEASE_SECONDS"),
        "heartbeat_seconds": Key(float, 15.0, env="DORCH_HEARTBEAT_SECONDS"),
        "max_attempts": Key(int, 3, env="DORCH_MAX_ATTEMPTS"),
        "task_timeout": Key(float, 600.0, env="DORCH_TASK_TIMEOUT"),
        "stop_grace": Key(float, 5.0, help="seconds between SIGTERM and SIGKILL for the agent"),
        "workspace_root": Key(str, "", env="DORCH_WORKSPACE_ROOT"),
        "keep_workspaces": Key(int, 50, help="finished task workspaces kept per worker"),
        "log_level": Key(str, "info", env="DORCH_LOG_LEVEL",
                         choices=("debug", "info", "warning", "error")),
    },
    "executor": {
        "kind": Key(str, "", env="DORCH_EXECUTOR", choices=("", "openclaw", "command", "echo"),
                    help="agent runner (default: openclaw when found, else an error)"),
        "pass_env": Key(list, [], help="extra environment variable names given to the agent, "
                        "e.g. LANG (never DORCH_* or *TOKEN*: declare secrets in `secrets`)"),
        "secrets": Key(list, [], help="secrets given to the agent's environment under these "
                       "names, e.g. ANTHROPIC_API_KEY; each stored with `dorch token set NAME`"),
        "isolation": Key(str, "auto", env="DORCH_ISOLATION", choices=("auto", "bubblewrap", "none"),
                         help="agent sandbox: bubblewrap, or none (same user, best effort); auto: "
                         "bubblewrap when it works (required under systemd)"),
        "ro_paths": Key(list, [], help="more paths the sandboxed agent may read (read-only)"),
        "max_processes": Key(int, 512, help="processes and threads per task (0: no limit)"),
        "memory_mb": Key(int, 4096, help="memory (PSS: shared pages counted once) of a task's "
                                          "processes, MB (0: no limit)"),
        "disk_mb": Key(int, 10240, help="disk used in a task's workspace and home, MB "
                       "(also the largest file; 0: no limit)"),
        "max_output_bytes": Key(int, 6 * 1024 * 1024, help="agent output read as the answer; "
                                "the rest stays in the workspace (0: no limit)"),
    },
    "executor.echo": {
        "delay": Key(float, 0.0, help="seconds each echo task takes (simulated work, demo)"),
    },
    "executor.openclaw": {
        "path": Key(str, "", env="DORCH_OPENCLAW", help="openclaw binary (default: PATH)"),
        "config": Key(str, "", help="openclaw config file passed with --config (default: "
                      "$OPENCLAW_CONFIG_PATH, else ~/.openclaw/openclaw.json when present)"),
        "node": Key(str, "", env="DORCH_OPENCLAW_NODE",
                    help="node binary running openclaw (>= 24.16 <25 or >= 26.1; default: PATH)"),
        "timeout_margin": Key(float, 20.0, help="seconds after the task timeout before dorch "
                              "kills an openclaw that has not reported its own timeout"),
        "extra_args": Key(list, [], help="more `openclaw agent exec` arguments"),
    },
    "executor.command": {
        "preset": Key(str, "", choices=("", "claude", "codex", "llm")),
        "argv": Key(list, [], help="argument template: {model} {thinking} {workspace} "
                    "{prompt_file}; an option whose placeholder is empty is dropped"),
        "path": Key(str, "", help="program to run instead of the preset's (e.g. a full path)"),
        "extra_args": Key(list, [], help="arguments appended to the preset's or argv's"),
        "thinking_map": Key(dict, {}, help="dorch thinking level -> the CLI's value "
                            "(\"\" drops the option); overrides the preset's map"),
        "default_model": Key(str, "", help="model used when a task names none"),
    },
    "models": {},   # free-form aliases: name = "provider/model"
    "prices": {},   # free-form: model = { input = $/Mtok, output = $/Mtok }
}

_FREE_FORM = {"models", "prices"}


@dataclass
class Config:
    """The effective configuration. ``values[section][key]``; ``sources`` says where each came from."""

    values: dict[str, dict[str, Any]]
    sources: dict[str, str]
    file: Path | None = None

    @property
    def bus_kind(self) -> str:
        return str(self.values["bus"]["kind"])

    @property
    def worker(self) -> dict[str, Any]:
        return self.values["worker"]

    @property
    def discord(self) -> dict[str, Any]:
        return self.values["discord"]

    @property
    def models(self) -> dict[str, str]:
        return self.values["models"]

    def local_path(self) -> Path:
        raw = self.values["local"]["path"]
        return Path(raw).expanduser() if raw else paths.default_queue()


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The file to load, by the documented search order, or None for built-in defaults."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (given with --config)")
        return path
    if paths.under_systemd():
        return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None
    env = os.environ.get("DORCH_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (named by $DORCH_CONFIG)")
        return path
    for candidate in (paths.config_dir() / "config.toml", SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load, validate and apply environment overrides. Raises ConfigError."""
    file = find_config_file(explicit)
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return build(raw, file)


def build(raw: dict[str, Any], file: Path | None = None) -> Config:
    """Validate a parsed TOML document against SCHEMA (nested tables allowed, e.g. executor.openclaw)."""
    where = str(file) if file else "<defaults>"
    flat = _flatten_sections(raw, where)
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for section, keys in SCHEMA.items():
        given = flat.pop(section, {})
        if section in _FREE_FORM:
            values[section] = _check_free_form(section, given, where)
            for k in given:
                sources[f"{section}.{k}"] = where
            continue
        values[section] = {}
        for key, spec in keys.items():
            dotted = f"{section}.{key}"
            if key in given:
                values[section][key] = _check(dotted, given.pop(key), spec, where)
                sources[dotted] = where
            else:
                values[section][key] = spec.default
                sources[dotted] = "default"
            if spec.env and os.environ.get(spec.env, "") != "":
                values[section][key] = _from_env(dotted, spec)
                sources[dotted] = f"${spec.env}"
        if given:
            unknown = sorted(given)[0]
            valid = ", ".join(keys) or "(none)"
            raise ConfigError(f"{where}: [{section}] {unknown}: unknown key; valid keys: {valid}")
    if flat:
        unknown = sorted(flat)[0]
        valid = ", ".join(s for s in SCHEMA if "." not in s)
        raise ConfigError(f"{where}: [{unknown}]: unknown section; valid sections: {valid}")
    cfg = Config(values=values, sources=sources, file=file)
    _check_relations(cfg, where)
    return cfg


def _flatten_sections(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    flat: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name}: expected a [{name}] table, got a plain value")
        own: dict[str, Any] = {}
        for key, value in table.items():
            sub = f"{name}.{key}"
            if isinstance(value, dict) and sub in SCHEMA:
                flat[sub] = dict(value)
            else:
                own[key] = value
        flat[name] = own
    return flat


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true/false"}
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _check(dotted: str, value: Any, spec: Key, where: str) -> Any:
    section, _, key = dotted.rpartition(".")
    label = f"{where}: [{section}] {key}"
    expected = spec.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if not ok:
        raise ConfigError(f"{label}: expected {_type_name(expected)}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        shown = ", ".join(repr(c) for c in spec.choices if c)
        raise ConfigError(f"{label}: {value!r} is not one of {shown}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{label}: must not be negative, got {value!r}")
    if expected == _ID:
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{label}: expected a Discord id (digits), got {value!r}") from None
    if expected is list and key in ("allowed_submitters", "allowed_roles", "fleet_bots"):
        try:
            value = [int(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: expected a list of Discord ids, got {value!r}") from None
    return value


def _from_env(dotted: str, spec: Key) -> Any:
    raw = os.environ[spec.env or ""]
    try:
        if spec.type is float:
            value: Any = float(raw)
        elif spec.type is int:
            value = int(raw)
        else:
            value = raw
    except ValueError:
        raise ConfigError(
            f"${spec.env}: expected {_type_name(spec.type)} for {dotted}, got {raw!r}"
        ) from None
    return _check(dotted, value, spec, f"${spec.env}")


def _check_free_form(section: str, given: dict[str, Any], where: str) -> dict[str, Any]:
    for key, value in given.items():
        if section == "models" and not isinstance(value, str):
            raise ConfigError(f"{where}: [models] {key}: expected a model name string, got {value!r}")
        if section == "prices":
            ok = isinstance(value, dict) and all(
                k in ("input", "output") and isinstance(v, (int, float)) for k, v in value.items()
            )
            if not ok:
                raise ConfigError(
                    f"{where}: [prices] {key}: expected {{ input = <$ per 1M tokens>, "
                    f"output = <$ per 1M tokens> }}, got {value!r}"
                )
    return dict(given)


def _check_relations(cfg: Config, where: str) -> None:
    w = cfg.worker
    if w["poll_interval"] <= 0:
        raise ConfigError(f"{where}: [worker] poll_interval: must be greater than 0")
    if w["max_attempts"] < 1:
        raise ConfigError(f"{where}: [worker] max_attempts: must be at least 1")
    if w["heartbeat_seconds"] >= w["lease_seconds"]:
        raise ConfigError(
            f"{where}: [worker] heartbeat_seconds ({w['heartbeat_seconds']}) must be less than "
            f"lease_seconds ({w['lease_seconds']}), or leases expire between heartbeats"
        )
    _check_agent_secrets(cfg, where)
    _check_discord_safety(cfg)
    if cfg.bus_kind == "discord":
        for key in ("guild_id", "task_channel", "results_channel", "pool_channel"):
            if not cfg.discord[key]:
                raise ConfigError(
                    f"{where}: [discord] {key}: required when [bus] kind = \"discord\" "
                    f"(right-click the channel in Discord with Developer Mode on -> Copy ID)"
                )
        for a, b in itertools.combinations(("task_channel", "results_channel", "pool_channel"), 2):
            if int(cfg.discord[a]) == int(cfg.discord[b]):
                raise ConfigError(
                    f"{where}: [discord] {a} and {b} are the same channel; dorch needs three "
                    "channels (#task-queue, #results, #worker-pool)"
                )


def _check_agent_secrets(cfg: Config, where: str) -> None:
    """[executor] secrets: environment variable names, never the bot token's credential."""
    from dorch.secrets import agent_secret_name, env_var, forbidden_env_name

    names = cfg.values["executor"]["secrets"]
    bot = str(cfg.discord["token"])
    for name in names:
        label = f"{where}: [executor] secrets: {name!r}"
        if not isinstance(name, str) or not agent_secret_name(name):
            raise ConfigError(f"{label}: expected an environment variable name (letters, digits "
                              "and '_', starting with a letter), e.g. ANTHROPIC_API_KEY")
        # the same $DORCH_SECRET_<NAME> and credential lookups: discord-token = DISCORD_TOKEN
        if env_var(name) in (env_var(bot), env_var("discord-token")):
            raise ConfigError(f"{label}: the Discord bot token is never given to an agent (it "
                              "could post tasks to every worker) and this is the name of its credential "
                              "([discord] token). Declare only the agent's own secrets")
        if forbidden_env_name(name, secret=True):
            raise ConfigError(f"{label}: this variable belongs to dorch or systemd and never "
                              "reaches an agent; pick another name")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: [executor] secrets: a name is listed twice")


def _check_discord_safety(cfg: Config) -> None:
    """[discord] token names a credential (never is one); api_base keeps the token encrypted."""
    from dorch.secrets import discord_token_problems

    name = str(cfg.discord["token"])
    bare = name[4:].strip() if name.lower().startswith("bot ") else name
    if not discord_token_problems(bare):  # its value is never shown: it is a secret
        raise ConfigError(
            f"{cfg.sources['discord.token']}: [discord] token: this is a token, not the name of a "
            "credential. Put the credential's name there (e.g. \"discord-token\"), store the "
            "token with `dorch token set discord-token` (`--systemd` for the services), and reset "
            "it in the Developer Portal: it has been written where others may have read it"
        )
    url = str(cfg.discord["api_base"])
    where = f"{cfg.sources['discord.api_base']}: [discord] api_base"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not an https:// URL (e.g. {DEFAULT_API_BASE})")
    if _loopback(parts.hostname):
        return
    if not cfg.discord["allow_insecure_http"]:
        raise ConfigError(
            f"{where}: {url!r} is plain http to another machine: the bot token would cross the "
            "network unencrypted. Use https://, or plain http only to a loopback address (the "
            "emulator on 127.0.0.1); allow_insecure_http = true overrides this"
        )
    log.warning("[discord] api_base %s is plain http (allow_insecure_http = true): the bot token "
                "crosses the network unencrypted", url)


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- writing TOML -----------------------------------------------------------------------------
# The standard library reads TOML (tomllib) but does not write it. dorch writes TOML only as
# configuration (the file `dorch setup` writes, the listing `dorch config show` prints), so the
# one writer lives here beside the reader; the layout (tables, comments) is the caller's.

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: Any) -> str:
    """VALUE written so that tomllib reads it back equal: a string, number, bool, a list of
    them, or a dict (an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):  # JSON's escapes are TOML's; TOML also wants DEL escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"TOML has no value for {type(value).__name__} {value!r}")


def toml_key(key: str) -> str:
    """KEY bare where TOML allows it, else quoted (a model name may hold '/' or '.')."""
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)
