"""First run: the answers ``dorch setup`` collects, how each is checked, and the config it writes.

The command (``dorch.cli.setup``) asks on a terminal or takes flags; everything that can be
decided without a terminal lives here, so scripts and tests get the same checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dorch.config import DEFAULT_API_BASE, Config, build, toml_key, toml_value

DEFAULT_TOKEN_NAME = "discord-token"
BUS_KINDS = ("local", "discord")
CHANNELS = ("task_channel", "results_channel", "pool_channel")


@dataclass(frozen=True)
class Question:
    """One answer: the config KEY it fills, its FLAG, the PROMPT, and whether it has a default."""

    key: str
    flag: str
    prompt: str
    required: bool = True


QUESTIONS: dict[str, Question] = {q.key: q for q in (
    Question("bus", "--bus", "Bus: local (a SQLite queue on this machine) or discord"),
    Question("local_path", "--local-path", "Queue file", required=False),
    Question("guild_id", "--guild-id", "Discord server (guild) id"),
    Question("task_channel", "--task-channel", "Id of the channel where tasks are posted"),
    Question("results_channel", "--results-channel", "Id of the channel for results"),
    Question("pool_channel", "--pool-channel", "Id of the channel for the worker board"),
    Question("allowed_submitters", "--allowed-submitters",
             "User ids allowed to submit tasks (comma-separated, empty for none)", required=False),
    Question("allowed_roles", "--allowed-roles",
             "Role ids allowed to submit tasks (comma-separated, empty for none)", required=False),
    Question("token_name", "--token-name", "Name of the secret holding the bot token",
             required=False),
)}

ID_HELP = ("a Discord id is 17 to 20 digits: in Discord, User Settings -> Advanced -> Developer "
           "Mode on, then right-click the server, channel, user or role -> Copy ID")


@dataclass
class Answers:
    """What the user chose. None: not answered yet."""

    bus: str | None = None
    local_path: str | None = None
    guild_id: int | None = None
    task_channel: int | None = None
    results_channel: int | None = None
    pool_channel: int | None = None
    allowed_submitters: list[int] | None = None
    allowed_roles: list[int] | None = None
    fleet_bots: list[int] | None = None  # a flag only: `dorch doctor` prints the bot's id
    token_name: str | None = None
    api_base: str | None = None

    def keys_needed(self) -> list[str]:
        """The questions that apply to this bus, in the order they are asked."""
        if self.bus == "local":
            return ["bus", "local_path"]
        if self.bus == "discord":
            return ["bus", "guild_id", *CHANNELS, "allowed_submitters", "allowed_roles", "token_name"]
        return ["bus"]

    def missing(self) -> list[str]:
        """Required answers still missing (None), by question key."""
        return [k for k in self.keys_needed() if QUESTIONS[k].required and getattr(self, k) is None]

    def fill_defaults(self) -> None:
        """Give the optional questions their defaults."""
        if self.allowed_submitters is None:
            self.allowed_submitters = []
        if self.allowed_roles is None:
            self.allowed_roles = []
        if self.token_name is None:
            self.token_name = DEFAULT_TOKEN_NAME


def parse_bus(text: str) -> str:
    kind = text.strip().lower()
    if kind not in BUS_KINDS:
        raise ValueError(f"{text!r} is not a bus: choose local or discord")
    return kind


def parse_id(text: str | int) -> int:
    """A Discord snowflake from TEXT, or ValueError saying how to find one."""
    raw = str(text).strip()
    if not re.fullmatch(r"\d{17,20}", raw) or int(raw) >= 1 << 64:
        raise ValueError(f"{raw!r} is not a Discord id: {ID_HELP}")
    return int(raw)


def parse_ids(text: str) -> list[int]:
    """Comma- or space-separated Discord ids (empty: none)."""
    return [parse_id(part) for part in re.split(r"[\s,]+", text.strip()) if part]


def parse_token_name(text: str) -> str:
    """A secret's name, or ValueError (as every parser here) saying what a name may hold."""
    from dorch.secrets import SecretError, check_name

    try:
        return check_name(text.strip())
    except SecretError as exc:
        raise ValueError(str(exc)) from None


def problems(answers: Answers) -> list[str]:
    """What is wrong across answers (each one alone already parsed)."""
    if answers.bus != "discord":
        return []
    found = []
    task = answers.task_channel
    for key in ("results_channel", "pool_channel"):
        if task is not None and getattr(answers, key) == task:
            found.append(f"the task channel cannot also be the {key.split('_')[0]} channel: "
                         "tasks need a channel of their own")
    return found


def warnings(answers: Answers) -> list[str]:
    if answers.bus == "discord" and not answers.allowed_submitters and not answers.allowed_roles:
        return ["no allowed submitters or roles: the workers will ignore every task posted by a "
                "person (add --allowed-submitters or --allowed-roles, or edit [discord] later)"]
    return []


def raw_config(answers: Answers) -> dict[str, dict[str, Any]]:
    """The TOML document as a dict (only what differs from the defaults, plus the bus)."""
    assert answers.bus is not None
    doc: dict[str, dict[str, Any]] = {"bus": {"kind": answers.bus}}
    if answers.bus == "local":
        if answers.local_path:
            doc["local"] = {"path": answers.local_path}
        return doc
    discord: dict[str, Any] = {}
    if answers.api_base and answers.api_base != DEFAULT_API_BASE:
        discord["api_base"] = answers.api_base
    discord["guild_id"] = answers.guild_id
    for key in CHANNELS:
        discord[key] = getattr(answers, key)
    discord["allowed_submitters"] = list(answers.allowed_submitters or [])
    discord["allowed_roles"] = list(answers.allowed_roles or [])
    if answers.fleet_bots:
        discord["fleet_bots"] = list(answers.fleet_bots)
    discord["token"] = answers.token_name or DEFAULT_TOKEN_NAME
    doc["discord"] = discord
    return doc


def to_config(answers: Answers, file: Path | None = None) -> Config:
    """The Config these answers make (ConfigError if the schema disagrees)."""
    return build(raw_config(answers), file)


def render(answers: Answers) -> str:
    """The config file's text."""
    lines = ["# dorch configuration, written by `dorch setup`.",
             "# `dorch config show` prints every setting and where it comes from.", ""]
    for section, keys in raw_config(answers).items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            comment = ""
            if key == "token":
                comment = "  # the NAME of the secret (keyring or systemd credential), not the token"
            lines.append(f"{toml_key(key)} = {toml_value(value)}{comment}")
        lines.append("")
    return "\n".join(lines)
