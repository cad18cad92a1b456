# ruff: noqa: F811  (pytest fixtures imported from tests.support.secret_service are parameters here)
"""`dorch setup`: by flags (scripts), on a real terminal (pty), its checks, and the file it writes."""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from dorch import config
from tests.support.helpers import DORCH, DorchHome
from tests.support.secret_service import Terminal, discord_token, secret_service  # noqa: F401

pytestmark = pytest.mark.timeout(120)

GUILD, TASKS, RESULTS, POOL = (123456789012345678, 223456789012345678, 323456789012345678,
                               423456789012345678)
ROLE, USER = 523456789012345678, 623456789012345678


def _env(home: DorchHome) -> dict[str, str]:
    env = home.env()
    env.pop("DORCH_CONFIG")  # setup writes to the user config dir ($DORCH_CONFIG_DIR)
    return env


def _setup(home: DorchHome, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`dorch setup` with no terminal: stdin is a pipe (empty unless INPUT)."""
    return subprocess.run([DORCH, "setup", *args], input=input or "", capture_output=True, text=True,
                          env=_env(home), timeout=60, check=False)


def _discord_flags(token_name: str, **ids: int) -> list[str]:
    values = {"guild-id": GUILD, "task-channel": TASKS, "results-channel": RESULTS,
              "pool-channel": POOL, **{k.replace("_", "-"): v for k, v in ids.items()}}
    return ["--bus", "discord", *[x for k, v in values.items() for x in (f"--{k}", str(v))],
            "--token-name", token_name]


@pytest.fixture
def token_name(secret_service: str, home: DorchHome) -> Iterator[str]:
    name = f"setup-test-{uuid.uuid4().hex[:10]}"
    yield name
    home.dorch("token", "delete", name)


def test_local_bus_by_flags_then_refuses_to_overwrite(home: DorchHome) -> None:
    target = home.root / "userconf" / "config.toml"
    out = _setup(home, "--bus", "local", "--local-path", str(home.root / "q.sqlite3"))
    assert out.returncode == 0, out.stderr
    assert f"wrote {target}" in out.stdout and "[bus]\nkind = \"local\"" in out.stdout  # shown
    cfg = config.load(target)
    assert cfg.bus_kind == "local" and cfg.local_path() == home.root / "q.sqlite3"

    before = target.read_text()
    again = _setup(home, "--bus", "discord")
    assert again.returncode == 1 and "--force" in again.stderr
    assert target.read_text() == before
    forced = _setup(home, "--bus", "local", "--force")
    assert forced.returncode == 0, forced.stderr
    assert config.load(target).local_path() != home.root / "q.sqlite3"


def test_no_terminal_and_missing_answers_lists_the_flags(home: DorchHome) -> None:
    out = _setup(home)
    assert out.returncode == 2 and "missing: --bus" in out.stderr
    out = _setup(home, "--bus", "discord", "--guild-id", str(GUILD), "--token-name", "never-stored")
    assert out.returncode == 2
    for flag in ("--task-channel", "--results-channel", "--pool-channel", "--token-stdin"):
        assert flag in out.stderr
    assert "--guild-id" not in out.stderr.split("missing:")[1]
    assert not (home.root / "userconf").exists()


def test_bad_ids_name_the_flag_and_how_to_find_ids(home: DorchHome) -> None:
    out = _setup(home, "--bus", "discord", "--guild-id", "my-server")
    assert out.returncode == 2
    assert "--guild-id: 'my-server' is not a Discord id" in out.stderr and "Copy ID" in out.stderr
    same = _setup(home, *_discord_flags("x", results_channel=TASKS), "--no-token")
    assert same.returncode == 2 and "tasks need a channel of their own" in same.stderr


def test_discord_by_flags_stores_the_token_and_writes_ids(home: DorchHome, token_name: str) -> None:
    token = discord_token()
    out = _setup(home, *_discord_flags(token_name), "--allowed-roles", str(ROLE),
                 "--allowed-submitters", f"{USER}, {USER + 1}", "--fleet-bots", str(USER + 2),
                 "--token-stdin", "--no-check", input=token + "\n")
    assert out.returncode == 0, out.stderr
    assert token not in out.stdout + out.stderr
    cfg = config.load(home.root / "userconf" / "config.toml")
    assert cfg.bus_kind == "discord"
    d = cfg.discord
    assert (d["guild_id"], d["task_channel"], d["results_channel"], d["pool_channel"]) == \
        (GUILD, TASKS, RESULTS, POOL)
    assert d["allowed_roles"] == [ROLE] and d["allowed_submitters"] == [USER, USER + 1]
    assert d["fleet_bots"] == [USER + 2]
    assert d["token"] == token_name
    assert token not in (home.root / "userconf" / "config.toml").read_text()
    assert home.dorch("token", "get", token_name, "--reveal").stdout == token + "\n"


def test_existing_token_is_used_without_asking(home: DorchHome, token_name: str) -> None:
    token = discord_token()
    home.dorch("token", "set", token_name, input=token)
    out = _setup(home, *_discord_flags(token_name), "--allowed-roles", str(ROLE), "--no-check")
    assert out.returncode == 0, out.stderr
    assert f"using the token {token_name!r} from the keyring" in out.stdout


def test_a_token_of_the_wrong_shape_is_refused_unless_yes(home: DorchHome, token_name: str) -> None:
    args = [*_discord_flags(token_name), "--allowed-roles", str(ROLE), "--token-stdin", "--no-check"]
    out = _setup(home, *args, input="Bot " + discord_token())
    assert out.returncode == 2 and "'Bot '" in out.stderr and "--yes" in out.stderr
    assert not (home.root / "userconf" / "config.toml").exists()
    assert home.dorch("token", "get", token_name).returncode == 1  # nothing stored either
    yes = _setup(home, *args, "--yes", input="odd-token-format")
    assert yes.returncode == 0, yes.stderr
    assert home.dorch("token", "get", token_name, "--reveal").stdout == "odd-token-format\n"


def test_no_submitters_warns_that_nobody_can_submit(home: DorchHome) -> None:
    out = _setup(home, *_discord_flags("unused"), "--no-token")
    assert out.returncode == 0, out.stderr
    assert "no allowed submitters or roles" in out.stderr


def test_interactive_on_a_terminal(home: DorchHome, token_name: str) -> None:
    token = discord_token()
    with Terminal([DORCH, "setup", "--no-check"], _env(home)) as t:
        t.expect("Bus: local (a SQLite queue on this machine) or discord [local]: ")
        t.send("discord")
        t.expect("guild) id: ")
        t.send("12345")  # too short: asked again
        t.expect("is not a Discord id")
        t.expect("guild) id: ")
        t.send(str(GUILD))
        for what, answer in (("where tasks are posted", TASKS), ("for results", RESULTS),
                             ("for the worker board", POOL)):
            t.expect(f"Id of the channel {what}: ")
            t.send(str(answer))
        t.expect("User ids allowed to submit tasks (comma-separated, empty for none) []: ")
        t.send(str(USER))
        t.expect("Role ids allowed to submit tasks (comma-separated, empty for none) []: ")
        t.send("")
        t.expect("Name of the secret holding the bot token [discord-token]: ")
        t.send(token_name)
        t.expect("not shown): ")
        t.send(token)
        t.expect("Repeat for confirmation: ")
        t.send(token)
        t.expect(f'token = "{token_name}"')  # the file is shown before it is written
        t.expect("Write it? [Y/n]: ")
        t.send("y")
        assert t.wait() == 0, t.text
    assert token not in t.text  # the terminal never echoed it
    cfg = config.load(home.root / "userconf" / "config.toml")
    assert cfg.discord["allowed_submitters"] == [USER] and cfg.discord["allowed_roles"] == []
    assert cfg.discord["guild_id"] == GUILD and cfg.discord["token"] == token_name
    assert home.dorch("token", "get", token_name, "--reveal").stdout == token + "\n"


def test_interactive_local_bus_can_be_declined(home: DorchHome) -> None:
    with Terminal([DORCH, "setup"], _env(home)) as t:
        t.expect("[local]: ")
        t.send("")
        t.expect("Queue file [")
        t.send("")
        t.expect("Write it? [Y/n]: ")
        t.send("n")
        assert t.wait() == 1, t.text
    assert "nothing written" in t.text
    assert not (home.root / "userconf" / "config.toml").exists()


# -- the live check, against the Discord emulator --------------------------------------------------

@pytest.fixture
def emulated_discord() -> Iterator[tuple[str, str, dict[str, int]]]:
    """An emulated guild whose bot has a Discord-shaped token: (api_base, token, ids)."""
    pytest.importorskip("dorch.bus.discord.doctor")
    from dorch_emulator import Emulator, EmulatorConfig
    from dorch_emulator.config import DEFAULT

    token = discord_token()
    world = copy.deepcopy(DEFAULT)
    world["bots"] = [{"name": "worker-1", "token": token}]
    cfg = EmulatorConfig.from_dict(world)
    ids = {"guild_id": cfg.guild_id, "task_channel": cfg.channel("task-queue").id,
           "results_channel": cfg.channel("results").id, "pool_channel": cfg.channel("worker-pool").id}
    with Emulator.running(cfg) as emu:
        yield emu.api_base, token, ids


def test_live_check_passes_then_writes(home: DorchHome, token_name: str,
                                       emulated_discord: tuple[str, str, dict[str, int]]) -> None:
    api_base, token, ids = emulated_discord
    out = _setup(home, *_discord_flags(token_name, **ids), "--allowed-roles", str(ROLE),
                 "--api-base", api_base, "--token-stdin", input=token)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok   token: accepted" in out.stdout and "FAIL" not in out.stdout
    assert config.load(home.root / "userconf" / "config.toml").discord["api_base"] == api_base


def test_live_check_failure_writes_nothing(home: DorchHome, token_name: str,
                                           emulated_discord: tuple[str, str, dict[str, int]]) -> None:
    api_base, token, ids = emulated_discord
    ids["results_channel"] = RESULTS  # not a channel of that guild
    out = _setup(home, *_discord_flags(token_name, **ids), "--allowed-roles", str(ROLE),
                 "--api-base", api_base, "--token-stdin", input=token)
    assert out.returncode == 78, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "nothing written" in out.stderr
    assert not (home.root / "userconf" / "config.toml").exists()
    assert home.dorch("token", "get", token_name).returncode == 1
