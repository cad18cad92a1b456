"""[executor] secrets: a real `dorch worker` hands each declared secret to its agent, and nothing
the agent prints (secrets, the bot token) reaches the result, RESULT.md, the queue or the logs."""

from __future__ import annotations

import hashlib
import json
import os
import secrets as random
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from dorch.model import State, TaskSpec
from dorch.runtime.process import EnvError, scrubbed_env
from tests.support.helpers import SUPPORT, DorchHome, agent_command, needs_bwrap, unavailable
from tests.support.secret_service import discord_token, secret_service  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def _agent(home: DorchHome, names: list[str], isolation: str = "auto") -> None:
    home.configure(executor={"kind": "command", "secrets": names, "isolation": isolation,
                             "ro_paths": [str(SUPPORT)]},
                   executor__command={"argv": agent_command("leaking_agent.py")})


def _proof(home: DorchHome) -> dict[str, Any]:
    """What the agent wrote in its workspace: the sha256 of each secret, its environment."""
    return dict(json.loads(next((home.root / "workspaces").glob("*/proof.json")).read_text()))


def _queue_bytes(home: DorchHome) -> bytes:
    return b"".join(p.read_bytes() for p in home.root.glob("queue.sqlite3*"))


def _run_one(home: DorchHome, prompt: str, **env: str) -> tuple[str, str]:
    task = str(home.call("submit", TaskSpec(prompt), "test"))
    proc = home.spawn_worker("1", **env)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return task, err


@pytest.mark.parametrize("isolation", ["bubblewrap", "none"])
def test_secrets_reach_the_agent_and_nothing_it_posts(home: DorchHome, tmp_path: Path,
                                                      isolation: str) -> None:
    if isolation == "bubblewrap":
        needs_bwrap()
    api_key = "sk-ant-api03-" + random.token_urlsafe(60)
    gh_token = "ghp_" + random.token_hex(18)
    bot = discord_token()
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "GH_TOKEN").write_text(gh_token + "\n")  # as systemd's LoadCredentialEncrypted=
    _agent(home, ["ANTHROPIC_API_KEY", "GH_TOKEN"], isolation)

    # STOLEN: the bot token, as the agent found it (reversed: the prompt is in the queue too)
    task, log = _run_one(home, f"ANTHROPIC_API_KEY\nGH_TOKEN\nSTOLEN:{bot[::-1]}\n",
                         DORCH_SECRET_ANTHROPIC_API_KEY=api_key, CREDENTIALS_DIRECTORY=str(creds),
                         DORCH_SECRET_DISCORD_TOKEN=bot)

    got = _proof(home)
    assert got["sha256"] == {"ANTHROPIC_API_KEY": hashlib.sha256(api_key.encode()).hexdigest(),
                             "GH_TOKEN": hashlib.sha256(gh_token.encode()).hexdigest()}
    assert not [n for n in got["environment"]
                if n.startswith("DORCH_") or n == "CREDENTIALS_DIRECTORY"]
    view = home.call("get", task)
    assert view.state is State.FAILED
    result = view.result
    assert "ANTHROPIC_API_KEY=[redacted]" in result.output
    assert "stolen=[redacted]" in result.output
    assert "folded: [redacted]" in result.output
    assert "url: [redacted]" in result.output
    assert "GH_TOKEN=[redacted]" in result.stderr_tail and "[redacted]" in result.error
    assert result.stderr_tail.endswith("cut here: [redacted]")  # the start of a secret, cut
    result_md = next((home.root / "workspaces").glob("*/RESULT.md")).read_text()
    assert "ANTHROPIC_API_KEY=[redacted]" in result_md
    queue = _queue_bytes(home)
    assert b"[redacted]" in queue
    for value in (api_key, gh_token, bot):
        for where in (result.output, result.error, result.stderr_tail, result_md, log):
            assert value not in where
            assert value[:len(value) // 2] not in where
        assert value.encode() not in queue
    assert "least safe" in log  # the environment warning, with the name only
    # nothing else dorch wrote (host state, pacing, queue sidecars) holds a value either; the
    # agent's raw output in its workspace's .dorch/ is the agent's own, kept for inspection
    written = [p for p in home.root.rglob("*") if p.is_file()
               and "credentials" not in p.parts and ".dorch" not in p.parts]
    leaks = [p for p in written for v in (api_key, gh_token, bot) if v.encode() in p.read_bytes()]
    assert leaks == []


def test_the_bot_token_is_refused_as_an_agent_secret(home: DorchHome) -> None:
    bot = discord_token()
    _agent(home, ["GH_TOKEN"])
    task = str(home.call("submit", TaskSpec("GH_TOKEN"), "test"))
    proc = home.spawn_worker("1", DORCH_SECRET_GH_TOKEN=bot, DORCH_SECRET_DISCORD_TOKEN=bot)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 78, err
    assert "'GH_TOKEN' holds the Discord bot token" in err
    assert bot not in err
    assert home.call("get", task).state is State.QUEUED  # never claimed

    for name in ("DISCORD_TOKEN", "Discord_Token"):
        _agent(home, [name])
        shown = home.dorch("config", "show")
        assert shown.returncode == 78
        assert "the Discord bot token is never given to an agent" in shown.stderr
        assert home.spawn_worker("1").wait(timeout=60) == 78


def test_a_missing_secret_stops_the_worker_saying_how_to_store_it(home: DorchHome) -> None:
    _agent(home, ["ANTHROPIC_API_KEY"])
    task = str(home.call("submit", TaskSpec("ANTHROPIC_API_KEY"), "test"))
    proc = home.spawn_worker("1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 78, err
    assert "agent's secret 'ANTHROPIC_API_KEY' is missing" in err
    assert "dorch token set ANTHROPIC_API_KEY" in err and "--systemd" in err
    assert "DORCH_SECRET_ANTHROPIC_API_KEY" in err and "CREDENTIALS_DIRECTORY" in err
    assert home.call("get", task).state is State.QUEUED


def test_token_names_pass_as_declared_secrets_only(home: DorchHome) -> None:
    env = scrubbed_env(secrets={"CLAUDE_CODE_OAUTH_TOKEN": "oauth-value"})
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "oauth-value"
    with pytest.raises(EnvError, match="GH_TOKEN"):
        scrubbed_env(pass_env=["GH_TOKEN"])
    with pytest.raises(EnvError, match="DORCH_SECRET_X"):
        scrubbed_env(secrets={"DORCH_SECRET_X": "v"})

    home.configure(executor={"kind": "command", "pass_env": ["GH_TOKEN"]},
                   executor__command={"argv": ["true"]})
    proc = home.spawn_worker("1", GH_TOKEN="from-the-environment")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 78 and "refusing to pass GH_TOKEN" in err

    home.configure(executor={"kind": "command", "secrets": ["bad-name"]},
                   executor__command={"argv": ["true"]})
    shown = home.dorch("config", "show")
    assert shown.returncode == 78 and "expected an environment variable name" in shown.stderr


def test_token_set_then_a_worker_gives_it_to_its_agent(
        home: DorchHome, secret_service: str) -> None:  # noqa: F811
    name = f"AGENT_KEY_{uuid.uuid4().hex[:8].upper()}"
    value = "key-" + random.token_urlsafe(30)
    try:
        stored = home.dorch("token", "set", name, input=value + "\n")
        assert stored.returncode == 0, stored.stderr
        shown = home.dorch("token", "get", name)
        assert shown.returncode == 0 and "found in the keyring" in shown.stdout
        assert "Discord" not in shown.stdout and value not in shown.stdout + shown.stderr
        _agent(home, [name])
        task, log = _run_one(home, name)
        got = _proof(home)
        assert got["sha256"] == {name: hashlib.sha256(value.encode()).hexdigest()}
        assert f"{name}=[redacted]" in home.call("get", task).result.output
        assert value not in log
    finally:
        home.dorch("token", "delete", name)
    assert home.dorch("token", "get", name).returncode == 1


def test_token_set_systemd_for_an_agent_secret(home: DorchHome, tmp_path: Path) -> None:
    """An encrypted credential and a drop-in that loads it, sorted after the drop-ins that reset
    the list (the bot token's, the role's credential.conf), so that none of them drops it."""
    from dorch.credstore import Layout

    if shutil.which("systemd-creds") is None or os.geteuid() != 0:
        unavailable("needs root and systemd-creds (apt-get install systemd)")
    env = home.env(SYSTEMD_CREDENTIAL_SECRET=str(tmp_path / "host.key"))
    store, units = tmp_path / "credstore.encrypted", tmp_path / "units"
    value = "ghp_" + random.token_hex(18)
    out = home.dorch("token", "set", "GH_TOKEN", "--systemd", "--credstore", str(store),
                     "--unit-dir", str(units), "--write-dropin", input=value, env=env)
    assert out.returncode == 0, out.stderr
    assert "[executor] secrets" in out.stdout and value not in out.stdout + out.stderr
    back = subprocess.run(["systemd-creds", "decrypt", "--name=GH_TOKEN", str(store / "GH_TOKEN"),
                           "-"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert back.stdout == value
    dropin = units / "dorch-worker@.service.d" / "zz-agent-GH_TOKEN.conf"
    text = dropin.read_text()
    assert f"[Service]\nLoadCredentialEncrypted=GH_TOKEN:{store / 'GH_TOKEN'}\n" in text
    assert "LoadCredentialEncrypted=\n" not in text  # adds to the list, never resets it
    for resetting in (Layout("discord-token", 2).dropin_path.name, "credential.conf"):
        assert dropin.name > resetting
    gone = home.dorch("token", "delete", "GH_TOKEN", "--systemd", "--credstore", str(store),
                      "--unit-dir", str(units), env=env)
    assert gone.returncode == 0, gone.stderr
    assert not (store / "GH_TOKEN").exists() and not dropin.exists()
