"""The Discord bus: the Bus contract over a Discord server (see ``bus`` for how it works)."""

from dorch.bus.discord.bus import DiscordBus

__all__ = ["DiscordBus"]
