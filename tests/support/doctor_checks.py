"""``dorch doctor``'s checks run in process against an emulator (used by the doctor's tests and
by the emulator's tests of channel overwrites)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dorch_emulator import Emulator

from dorch.bus.discord.doctor import Check, diagnose
from dorch.config import Config, build


def discord_config(emu: Emulator) -> dict[str, Any]:
    c = emu.config
    return {"bus": {"kind": "discord"},
            "discord": {"api_base": emu.api_base, "guild_id": str(c.guild_id),
                        "task_channel": str(c.channel("task-queue").id),
                        "results_channel": str(c.channel("results").id),
                        "pool_channel": str(c.channel("worker-pool").id)}}


def checks_for(emu: Emulator, tmp_path: Path, bot: str = "worker-1",
               token: str | None = None) -> dict[str, Check]:
    cfg: Config = build(discord_config(emu))
    tok = token if token is not None else emu.config.bot(bot).token
    found = asyncio.run(diagnose(cfg, tok, state_dir=tmp_path / "state"))
    return {c.name: c for c in found}
