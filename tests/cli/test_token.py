# ruff: noqa: F811  (pytest fixtures imported from tests.support.secret_service are parameters here)
"""`dorch token set|get|delete`, run as the installed command against a real Secret Service,
and `--systemd` against the real systemd-creds (host key in a temporary file)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.helpers import DORCH, DorchHome, unavailable
from tests.support.secret_service import Terminal, discord_token, secret_name, secret_service  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def _get(home: DorchHome, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return home.dorch("token", "get", name, *args, env=home.env(**env))


def test_set_from_stdin_get_and_delete(home: DorchHome, secret_name: str) -> None:
    token = discord_token(bot_id=112233445566778899)
    out = home.dorch("token", "set", secret_name, input=token + "\n")
    assert out.returncode == 0, out.stderr
    assert "stored" in out.stdout and "keyring" in out.stdout and token not in out.stdout

    shown = _get(home, secret_name)
    assert shown.returncode == 0, shown.stderr
    assert "found in the keyring" in shown.stdout
    assert "looks like a Discord bot token (bot user id 112233445566778899)" in shown.stdout
    assert token not in shown.stdout + shown.stderr

    revealed = _get(home, secret_name, "--reveal")
    assert revealed.stdout == token + "\n"  # alone on stdout, for $(...)
    assert "found in the keyring" in revealed.stderr

    data = json.loads(_get(home, secret_name, "--json").stdout)
    assert data["found"] and data["source"] == "keyring" and "value" not in data
    assert data["discord_token"] == {"looks_valid": True, "problems": [], "bot_id": 112233445566778899}
    assert json.loads(_get(home, secret_name, "--json", "--reveal").stdout)["value"] == token

    gone = home.dorch("token", "delete", secret_name)
    assert gone.returncode == 0 and "removed" in gone.stdout
    after = _get(home, secret_name)
    assert after.returncode == 1
    assert "not found" in after.stderr and f"dorch token set {secret_name}" in after.stderr
    again = home.dorch("token", "delete", secret_name)
    assert again.returncode == 1 and "not in the keyring" in again.stderr


def test_prompt_on_a_terminal_does_not_echo(home: DorchHome, secret_name: str) -> None:
    token = discord_token()
    with Terminal([DORCH, "token", "set", secret_name], home.env()) as term:
        term.expect("(not shown): ")
        term.send(token)
        term.expect("Repeat for confirmation: ")
        term.send(token + "typo")
        term.expect("do not match")
        term.expect("(not shown): ")
        term.send(token)
        term.expect("Repeat for confirmation: ")
        term.send(token)
        assert term.wait() == 0, term.text
    assert "stored" in term.text
    assert token not in term.text  # never echoed by the terminal nor printed
    assert _get(home, secret_name, "--reveal").stdout == token + "\n"


def test_value_on_the_command_line_is_refused(home: DorchHome, secret_name: str) -> None:
    out = home.dorch("token", "set", secret_name, "hunter2-value")
    assert out.returncode == 2
    assert "never given on the command line" in out.stderr and "hunter2-value" not in out.stderr
    assert _get(home, secret_name).returncode == 1


def test_empty_stdin_is_an_error(home: DorchHome, secret_name: str) -> None:
    out = home.dorch("token", "set", secret_name, "-", input="\n")
    assert out.returncode == 2 and "no value" in out.stderr


def test_get_explains_a_bad_shape_and_shadowed_places(home: DorchHome, secret_name: str) -> None:
    home.dorch("token", "set", secret_name, input="Bot abc.def.ghi")
    env_var = "DORCH_SECRET_" + secret_name.upper().replace("-", "_")
    out = _get(home, secret_name, **{env_var: "from-the-environment"})
    assert out.returncode == 0, out.stderr
    assert "does not look like a Discord bot token" in out.stdout and "'Bot '" in out.stdout
    assert f"also in the environment variable {env_var} (not used" in out.stdout


def test_setting_a_discord_name_warns_about_a_bad_shape(home: DorchHome, secret_service: str) -> None:
    name = "discord-test-shape"
    try:
        out = home.dorch("token", "set", name, input="only.two")
        assert out.returncode == 0
        assert "does not look like a Discord bot token" in out.stderr and "2 dot-separated" in out.stderr
    finally:
        home.dorch("token", "delete", name)


def test_without_a_keyring_set_says_what_to_do(home: DorchHome, tmp_path: Path) -> None:
    env = home.env(XDG_CONFIG_HOME=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop("PYTHON_KEYRING_BACKEND", None)
    out = home.dorch("token", "set", "discord-token", input=discord_token(), env=env)
    assert out.returncode == 78
    assert "no keyring backend available" in out.stderr
    assert "sudo dorch token set discord-token --systemd" in out.stderr
    assert "Secret Service" in out.stderr
    assert "Traceback" not in out.stderr


# -- --systemd: encrypted credentials ------------------------------------------------------------

@pytest.fixture
def creds(tmp_path: Path, home: DorchHome) -> dict[str, str]:
    """An environment whose systemd-creds (the real one, through a wrapper on PATH that records
    its argv) uses a host key in TMP_PATH instead of /var/lib/systemd/credential.secret."""
    real = shutil.which("systemd-creds")
    if real is None:
        unavailable("systemd-creds not installed (apt-get install systemd)")
    if os.geteuid() != 0:
        unavailable("--systemd needs root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "systemd-creds"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path}/argv.log\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return home.env(PATH=f"{bin_dir}:{os.environ['PATH']}",
                    SYSTEMD_CREDENTIAL_SECRET=str(tmp_path / "credential.secret"))


def _decrypt(env: dict[str, str], name: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-creds", "decrypt", f"--name={name}", str(path), "-"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_systemd_encrypts_through_stdin_and_prints_the_dropin(
        home: DorchHome, creds: dict[str, str], tmp_path: Path) -> None:
    token = discord_token()
    store, units = tmp_path / "credstore.encrypted", tmp_path / "units"
    out = home.dorch("token", "set", "discord-token", "--systemd", "--credstore", str(store),
                     "--unit-dir", str(units), input=token + "\n", env=creds)
    assert out.returncode == 0, out.stderr
    path = store / "discord-token"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token.encode() not in path.read_bytes()
    assert _decrypt(creds, "discord-token", path).stdout == token
    wrong = _decrypt(creds, "other-name", path)  # the name is embedded: no reuse under another
    assert wrong.returncode != 0 and token not in wrong.stdout
    assert token not in (tmp_path / "argv.log").read_text()  # never on a command line (ps)
    assert "encrypt --name=discord-token - " in (tmp_path / "argv.log").read_text()
    assert ("[Service]\nLoadCredentialEncrypted=\nLoadCredentialEncrypted=discord-token:" + str(path)
            in out.stdout)
    assert not units.exists()  # printed, not written, without --write-dropin
    assert token not in out.stdout + out.stderr

    # Outside a unit nothing can read it, but `token get` says it is there.
    seen = home.dorch("token", "get", "discord-token", "--credstore", str(store), env=creds)
    assert seen.returncode == 1 and f"an encrypted credential {path} exists" in seen.stderr


def test_systemd_per_instance_with_written_dropin_then_delete(
        home: DorchHome, creds: dict[str, str], tmp_path: Path) -> None:
    store, units = tmp_path / "store", tmp_path / "units"
    args = ["--systemd", "--instance", "2", "--credstore", str(store), "--unit-dir", str(units)]
    out = home.dorch("token", "set", "discord-token", *args, "--write-dropin",
                     input="instance-two-token", env=creds)
    assert out.returncode == 0, out.stderr
    path = store / "dorch-worker@2.discord-token"  # the Ansible role's layout
    assert _decrypt(creds, "discord-token", path).stdout == "instance-two-token"
    dropin = units / "dorch-worker@2.service.d" / "discord-token.conf"
    text = dropin.read_text()
    assert "[Service]\nLoadCredentialEncrypted=\nLoadCredentialEncrypted=discord-token:" + str(path) in text
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert "daemon-reload" in out.stdout

    gone = home.dorch("token", "delete", "discord-token", *args, env=creds)
    assert gone.returncode == 0, gone.stderr
    assert not path.exists() and not dropin.exists()
    again = home.dorch("token", "delete", "discord-token", *args, env=creds)
    assert again.returncode == 1


def test_systemd_needs_root(home: DorchHome, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        unavailable("cannot run as non-root here (unshare --user failed)")
    store = tmp_path / "store"
    out = subprocess.run(["unshare", "--user", DORCH, "token", "set", "discord-token", "--systemd",
                          "--credstore", str(store)], input="x" * 30, capture_output=True,
                         text=True, env=home.env(), timeout=60, check=False)
    assert out.returncode == 78, out.stderr
    assert "needs root" in out.stderr and "sudo" in out.stderr
    assert not store.exists()


def test_systemd_creds_missing_or_too_old(home: DorchHome, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("--systemd needs root")
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = home.dorch("token", "set", "discord-token", "--systemd", "--credstore",
                         str(tmp_path / "store"), input="x" * 30, env=home.env(PATH=str(empty)))
    assert missing.returncode == 78
    assert "systemd-creds not found" in missing.stderr and "systemd 250 or newer" in missing.stderr

    old = tmp_path / "old"
    old.mkdir()
    (old / "systemd-creds").write_text("#!/bin/sh\necho 'systemd 249 (249.11-0ubuntu3)'\n")
    (old / "systemd-creds").chmod(0o755)
    too_old = home.dorch("token", "set", "discord-token", "--systemd", "--credstore",
                         str(tmp_path / "store"), input="x" * 30,
                         env=home.env(PATH=f"{old}:/usr/bin:/bin"))
    assert too_old.returncode == 78
    assert "systemd 249" in too_old.stderr and "250 or newer" in too_old.stderr
    assert not (tmp_path / "store").exists()
