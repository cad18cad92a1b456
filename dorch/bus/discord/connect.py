"""dorch's configuration turned into what the Discord bus and its REST client take: the
``[discord]`` and ``[worker]`` settings the bus reads, a client for the configured server, and
the hourly preflight (the checks of ``dorch doctor``). The REST client itself knows nothing of
dorch's configuration, paths or logging.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dorch import paths
from dorch.bus.discord import trust
from dorch.bus.discord.outbox import new_nonce
from dorch.discord.client import DiscordClient
from dorch.log import register_secret

if TYPE_CHECKING:
    from dorch.config import Config



@dataclass(frozen=True)
class Settings:
    """What the Discord bus reads of the configuration."""

    guild: int
    task_channel: int
    results_channel: int
    pool_channel: int
    allowed_users: frozenset[int]
    allowed_roles: frozenset[int]
    fleet_bots: frozenset[int]  # as configured: empty in configurations older than it
    max_attempts: int
    lease: float
    host: str

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        d = config.discord
        return cls(int(d["guild_id"]), int(d["task_channel"]), int(d["results_channel"]),
                   int(d["pool_channel"]), frozenset(int(u) for u in d["allowed_submitters"]),
                   frozenset(int(r) for r in d["allowed_roles"]),
                   frozenset(int(b) for b in d.get("fleet_bots") or []),
                   int(config.worker["max_attempts"]), float(config.worker["lease_seconds"]),
                   socket.gethostname())

    def fleet(self, me: int | None = None) -> trust.Fleet:
        """The bots whose markers dorch believes (this bot, ME, included when given)."""
        return trust.Fleet.from_config({"fleet_bots": list(self.fleet_bots),
                                        "allowed_submitters": list(self.allowed_users)}, me)


def state_dir() -> Path:
    """Where the host's Discord state lives (rate limits, the bus's shared state)."""
    return paths.private_dir() / "discord"


def token(config: Config) -> str:
    """The bot token: systemd credential, keyring, then environment (dorch.secrets)."""
    from dorch.secrets import lookup_secret

    return lookup_secret(config.discord["token"])


def client_options(config: Config) -> dict[str, Any]:
    """The client's keyword arguments that CONFIG's ``[discord]`` section decides."""
    from dorch.config import DEFAULT_API_BASE

    section = config.discord
    options: dict[str, Any] = {"api_base": section.get("api_base") or DEFAULT_API_BASE,
                               "nonce": new_nonce, "on_secret": register_secret}
    if section.get("invalid_request_limit"):
        options["invalid_limit"] = int(section["invalid_request_limit"])
    return options


def open_client(config: Config, bot_token: str | None = None, **kwargs: Any) -> DiscordClient:
    """A client for CONFIG's server (its token looked up unless BOT_TOKEN is given), sharing
    its rate limits with the host's other dorch processes."""
    kwargs.setdefault("state_dir", state_dir())
    return DiscordClient(token(config) if bot_token is None else bot_token,
                         **(client_options(config) | kwargs))
