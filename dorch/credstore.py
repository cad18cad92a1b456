"""Encrypted systemd credentials: a secret into /etc/credstore.encrypted, and the unit drop-in.

``systemd-creds encrypt`` (systemd >= 250) seals the value with the host key
(/var/lib/systemd/credential.secret) and/or the TPM2, and embeds the credential's name, which
must match the unit's ``LoadCredentialEncrypted=`` id. The value goes to it through stdin, never
on a command line (``ps`` would show it), and never into a plain file.

One token for every worker: ``/etc/credstore.encrypted/NAME`` and a drop-in for the template
``dorch-worker@.service``. One per instance (``instance=N``): the same embedded NAME in
``/etc/credstore.encrypted/dorch-worker@N.NAME`` (the Ansible role's layout) and a drop-in for
``dorch-worker@N.service`` that replaces the template's setting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dorch.secrets import CREDSTORE, SecretError, agent_secret_name, check_name

MIN_SYSTEMD = 250
UNIT_DIR = Path("/etc/systemd/system")
TEMPLATE_CREDENTIAL = "discord-token"  # what systemd/dorch-worker@.service loads by itself
_TIMEOUT = 60.0


@dataclass(frozen=True)
class Layout:
    """Where the credential NAME (of one INSTANCE, or of every worker) and its drop-in live."""

    name: str
    instance: int | None = None
    credstore: Path = CREDSTORE
    unit_dir: Path = UNIT_DIR

    @property
    def file(self) -> Path:
        base = f"dorch-worker@{self.instance}.{self.name}" if self.instance else self.name
        return self.credstore / base

    @property
    def unit(self) -> str:
        return f"dorch-worker@{self.instance or ''}.service"

    @property
    def agent(self) -> bool:
        """An agent's secret ([executor] secrets: an environment variable name), not a bot token."""
        return agent_secret_name(self.name) and self.name != TEMPLATE_CREDENTIAL

    @property
    def dropin_path(self) -> Path:
        # Drop-ins apply in file-name order across the template's and the instance's directory:
        # an agent secret's comes after those that reset the list (discord-token.conf, the
        # role's credential.conf), which would otherwise drop it.
        name = f"zz-agent-{self.name}.conf" if self.agent else f"{self.name}.conf"
        return self.unit_dir / f"{self.unit}.d" / name

    def dropin(self) -> str:
        """The drop-in that loads this credential; the worker reads $CREDENTIALS_DIRECTORY/NAME."""
        use = (f"gives it to its agent as ${self.name} ([executor] secrets)" if self.agent
               else "reads the token from it")
        lines = [f"# {self.dropin_path}, from `dorch token set {self.name} --systemd`.",
                 f"# {self.unit} loads $CREDENTIALS_DIRECTORY/{self.name} and {use}.",
                 "[Service]"]
        if not self.agent and (self.instance or self.name == TEMPLATE_CREDENTIAL):
            # Replace the template's own discord-token entry instead of adding a second one for
            # the same id (an empty assignment resets the list; the Ansible role does the same).
            lines.append("LoadCredentialEncrypted=")
        lines.append(f"LoadCredentialEncrypted={self.name}:{self.file}")
        return "\n".join(lines) + "\n"


def require_root() -> None:
    if os.geteuid() != 0:
        raise SecretError(
            "storing a systemd credential needs root (the host key in /var/lib/systemd and "
            "/etc/credstore.encrypted are root's): run it with sudo; for your own desktop "
            "session use `dorch token set NAME` without --systemd (the keyring)"
        )


def systemd_creds() -> str:
    """The path of a systemd-creds that is new enough, else SecretError saying what is needed."""
    path = shutil.which("systemd-creds")
    if path is None:
        raise SecretError(
            f"systemd-creds not found: encrypted credentials need systemd {MIN_SYSTEMD} or newer "
            "(Debian 12 has 252; install the systemd package). Without it, keep the token in "
            "the keyring (`dorch token set NAME`)"
        )
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False,
                             timeout=_TIMEOUT).stdout
    except OSError as exc:
        raise SecretError(f"{path}: cannot run: {exc.strerror}") from None
    match = re.match(r"systemd (\d+)", out)
    if match is None:
        raise SecretError(f"{path} --version printed no systemd version: {out[:80]!r}")
    if int(match.group(1)) < MIN_SYSTEMD:
        raise SecretError(
            f"systemd-creds is from systemd {match.group(1)}; encrypted credentials "
            f"(LoadCredentialEncrypted=) need {MIN_SYSTEMD} or newer"
        )
    return path


def encrypt(layout: Layout, value: str) -> Path:
    """Encrypt VALUE into LAYOUT.file (mode 0600, directory 0700), checked by decrypting it back."""
    name = check_name(layout.name)
    creds = systemd_creds()
    target = layout.file
    if not target.parent.is_dir():
        target.parent.mkdir(mode=0o700, parents=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
    try:
        _run([creds, "encrypt", f"--name={name}", "-", str(tmp)], value, "encrypt")
        os.chmod(tmp, 0o600)
        back = _run([creds, "decrypt", f"--name={name}", str(tmp), "-"], None, "decrypt")
        if back != value:
            raise SecretError(f"{target}: systemd-creds decrypt does not give back what was stored")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_dropin(layout: Layout) -> Path:
    path = layout.dropin_path
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(layout.dropin(), encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def remove(layout: Layout) -> list[Path]:
    """Delete the encrypted credential and its drop-in; the paths that were there."""
    removed = []
    for path in (layout.file, layout.dropin_path):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _run(argv: list[str], stdin: str | None, what: str) -> str:
    try:
        proc = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True,
                              check=False, timeout=_TIMEOUT, umask=0o077)
    except OSError as exc:
        raise SecretError(f"{argv[0]}: cannot run: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise SecretError(f"systemd-creds {what} did not finish within {_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SecretError(f"systemd-creds {what} failed (exit {proc.returncode}): "
                          f"{err[-1] if err else 'no message'}")
    return proc.stdout.decode("utf-8", errors="replace")
