"""``dorch doctor`` against the emulator: a healthy bot, a bot missing a permission, one without
the MESSAGE_CONTENT intent, a bad token; the CLI as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dorch_emulator import Emulator

from dorch.bus.discord import doctor
from dorch.bus.discord.doctor import channel_permissions
from tests.support.doctor_checks import checks_for, discord_config
from tests.support.emulator_api import MakeEmulator
from tests.support.route_proxy import RouteProxy


def test_a_healthy_bot_passes_every_check(emulator: Emulator, tmp_path: Path) -> None:
    checks = checks_for(emulator, tmp_path)
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert list(checks) == ["token", "bot user", "fleet", "message content intent", "guild",
                            "[discord] task_channel", "permissions in #task-queue",
                            "[discord] results_channel", "permissions in #results",
                            "[discord] pool_channel", "permissions in #worker-pool",
                            "threads in #task-queue"]
    assert "Manage Messages" in checks["permissions in #task-queue"].detail
    assert not any(r.method != "GET" for r in emulator.requests)  # it only reads


def test_a_bot_missing_a_permission(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator(bots=[{"name": "worker-1", "deny": ["MANAGE_MESSAGES", "ADD_REACTIONS"]}])
    checks = checks_for(emu, tmp_path)
    bad = checks["permissions in #task-queue"]
    assert not bad.ok
    assert bad.detail == "missing: Add Reactions, Manage Messages"
    assert "Add Reactions, Manage Messages" in bad.fix and "oauth2/authorize" in bad.fix
    assert checks["permissions in #results"].ok  # not needed there
    assert checks["message content intent"].ok


def test_a_channel_the_bot_cannot_see(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator(bots=[{"name": "worker-1", "channels": {"results": {"deny": ["VIEW_CHANNEL"]}}}])
    checks = checks_for(emu, tmp_path)
    bad = checks["[discord] results_channel"]
    assert not bad.ok and "cannot see" in bad.detail and "View Channel" in bad.fix
    assert checks["[discord] task_channel"].ok


def test_a_bot_without_the_message_content_intent(make_emulator: MakeEmulator,
                                                  tmp_path: Path) -> None:
    emu = make_emulator(bots=[{"name": "worker-1", "message_content": False}])
    checks = checks_for(emu, tmp_path)
    intent = checks["message content intent"]
    assert not intent.ok and "MESSAGE CONTENT INTENT" in intent.fix
    assert sum(not c.ok for c in checks.values()) == 1


def test_a_rejected_token_stops_the_checks(emulator: Emulator, tmp_path: Path) -> None:
    checks = checks_for(emulator, tmp_path, token="revoked")
    assert list(checks) == ["token"]
    assert not checks["token"].ok and "dorch token set discord-token" in checks["token"].fix


def test_channel_permission_arithmetic() -> None:
    guild, me, role = 100, 200, 300
    base = doctor.VIEW_CHANNEL | doctor.SEND_MESSAGES | doctor.ADD_REACTIONS
    overwrites = [
        {"id": str(guild), "type": 0, "allow": "0", "deny": str(doctor.SEND_MESSAGES)},
        {"id": str(role), "type": 0, "allow": str(doctor.SEND_MESSAGES | doctor.MANAGE_MESSAGES),
         "deny": "0"},
        {"id": str(me), "type": 1, "allow": "0", "deny": str(doctor.ADD_REACTIONS)},
    ]
    perms = channel_permissions(base, overwrites, guild_id=guild, user_id=me, role_ids=[role])
    assert perms & doctor.SEND_MESSAGES  # the role's allow beats @everyone's deny
    assert perms & doctor.MANAGE_MESSAGES
    assert not perms & doctor.ADD_REACTIONS  # the member's own deny wins last
    no_role = channel_permissions(base, overwrites, guild_id=guild, user_id=me, role_ids=[])
    assert not no_role & doctor.SEND_MESSAGES
    admin = channel_permissions(doctor.ADMINISTRATOR, overwrites, guild_id=guild, user_id=me,
                                role_ids=[])
    assert admin & doctor.ADD_REACTIONS


# -- the command ---------------------------------------------------------------------------------

def run_doctor(emu: Emulator, tmp_path: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = discord_config(emu)
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORCH_")}
    env |= {"DORCH_SECRET_DISCORD_TOKEN": token, "DORCH_DATA_DIR": str(tmp_path / "data"),
            "DORCH_CONFIG_DIR": str(tmp_path / "config")}
    return subprocess.run([sys.executable, "-m", "dorch", "doctor", "--config", str(path), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_command_prints_a_fix_for_every_failure(make_emulator: MakeEmulator,
                                                    tmp_path: Path) -> None:
    emu = make_emulator(bots=[{"name": "worker-1", "message_content": False,
                               "deny": ["CREATE_PUBLIC_THREADS"]}])
    token = emu.config.bot("worker-1").token
    done = run_doctor(emu, tmp_path, token)
    assert done.returncode == 1, done.stderr
    fails = [ln for ln in done.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 2
    warnings = [ln for ln in done.stdout.splitlines() if ln.startswith("warn")]
    assert done.stdout.count("fix: ") == len(fails) + len(warnings)
    assert "Create Public Threads" in done.stdout and "2 check(s) failed" in done.stdout
    assert token not in done.stdout + done.stderr

    as_json = json.loads(run_doctor(emu, tmp_path, token, "--json").stdout)
    assert as_json["ok"] is False
    assert [c["name"] for c in as_json["checks"] if not c["ok"]] == [
        "message content intent", "permissions in #task-queue"]


def test_the_command_passes_and_a_bad_token_exits_78(emulator: Emulator, tmp_path: Path) -> None:
    good = run_doctor(emulator, tmp_path, emulator.config.bot("worker-2").token)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all checks passed" in good.stdout
    bad = run_doctor(emulator, tmp_path, "revoked-token-value")
    assert bad.returncode == 78
    assert "dorch token set discord-token" in bad.stdout
    assert "revoked-token-value" not in bad.stdout + bad.stderr


def test_an_unknown_route_is_named_and_every_other_check_still_runs(emulator: Emulator,
                                                                    tmp_path: Path) -> None:
    # a proxy that does not forward GET /applications/@me: today one error line and no checks
    with RouteProxy(emulator.url, {("GET", "/applications/@me")}) as proxy:
        cfg = discord_config(emulator)
        cfg["discord"]["api_base"] = proxy.url + "/api/v10"
        path = tmp_path / "config.toml"
        path.write_text("\n".join(
            line for section, values in cfg.items()
            for line in [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]))
        env = {**os.environ, "DORCH_SECRET_DISCORD_TOKEN": emulator.config.bot("worker-1").token,
               "DORCH_DATA_DIR": str(tmp_path / "data"), "DORCH_CONFIG_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-m", "dorch", "doctor", "--config", str(path),
                               "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert not checks["discord api"]["ok"]
    assert "GET /applications/@me" in checks["discord api"]["detail"]
    assert "api_base" in checks["discord api"]["fix"]
    assert [n for n, c in checks.items() if c["ok"]] == [
        "token", "bot user", "fleet", "guild", "[discord] task_channel",
        "permissions in #task-queue", "[discord] results_channel", "permissions in #results",
        "[discord] pool_channel", "permissions in #worker-pool", "threads in #task-queue"]


# -- the fleet and who else may start threads ------------------------------------------------------

def test_the_command_names_this_bot_for_fleet_bots(emulator: Emulator, tmp_path: Path) -> None:
    bot = emulator.config.bot("worker-2")
    done = run_doctor(emulator, tmp_path, bot.token)
    assert done.returncode == 0, done.stdout + done.stderr  # a warning, not a failure
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("warn  fleet")]
    assert f"this bot is id {bot.id}" in line
    assert f'fleet_bots = ["{bot.id}", ...]' in done.stdout


def test_the_command_warns_that_everyone_may_start_threads_on_tasks(emulator: Emulator,
                                                                    tmp_path: Path) -> None:
    # Discord's defaults (the emulator's too): @everyone may Create Public Threads anywhere
    done = run_doctor(emulator, tmp_path, emulator.config.bot("worker-1").token, "--json")
    assert done.returncode == 0, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    threads = checks["threads in #task-queue"]
    assert threads["ok"] and threads["warn"]
    assert threads["detail"].startswith("@everyone may start threads")
    assert "deny Create Public Threads and Send Messages in Threads to @everyone" in threads["fix"]
    assert "allow both to the fleet's bot role" in threads["fix"]


def test_who_outside_the_fleet_may_start_threads() -> None:
    guild, fleet_role, helpers, stranger = 100, 300, 400, 555
    threads = doctor.CREATE_PUBLIC_THREADS | doctor.SEND_MESSAGES_IN_THREADS
    roles = [{"id": str(guild), "name": "@everyone", "permissions": str(threads)},
             {"id": str(fleet_role), "name": "dorch", "permissions": "0"},
             {"id": str(helpers), "name": "helpers", "permissions": "0"},
             {"id": "600", "name": "admins", "permissions": str(doctor.ADMINISTRATOR)}]
    locked = [{"id": str(guild), "type": 0, "allow": "0", "deny": str(threads)},
              {"id": str(fleet_role), "type": 0, "allow": str(threads), "deny": "0"}]

    def who(overwrites: list[dict[str, Any]]) -> list[str]:
        return doctor.thread_openers(roles, overwrites, guild_id=guild, fleet_roles={fleet_role},
                                     fleet_users={200})

    assert who([]) == ["@everyone"]  # Discord's default
    assert who(locked) == []  # the fix: denied to @everyone, allowed to the fleet's role
    assert who([*locked, {"id": str(helpers), "type": 0, "allow": str(doctor.CREATE_PUBLIC_THREADS),
                          "deny": "0"}]) == ["role helpers"]
    assert who([*locked, {"id": str(stranger), "type": 1,
                          "allow": str(doctor.SEND_MESSAGES_IN_THREADS), "deny": "0"}]) == [
        f"member {stranger}"]
