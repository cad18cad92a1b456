"""The Ansible role: ansible-lint (production profile) and its molecule scenarios, run by .ci/ansible-test.

Both scenarios boot Debian 12 hosts with systemd in systemd-nspawn containers and check that the
units systemd loads are systemd/'s byte for byte, adapted by drop-ins only, as hardened as ever.
``default``: two hosts from a wheelhouse on the Discord emulator, 3 + 2 workers over SSH,
idempotence, a task on each host, one host scaled down (the extra units stopped, disabled and
masked). ``deb``: one host from the .deb built from this tree, on the local bus, where an admin's
``dorch submit --wait`` is answered by a worker unit. .ci/ansible-test installs its own tools
(ansible-core, molecule, ansible-lint) into a venv under $DORCH_TOOLS_DIR; it exits 77 when it
cannot.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from . import nspawn
from .conftest import FACTS, in_ci

SCRIPT = nspawn.REPO / ".ci" / "ansible-test"
TOOLS_UNAVAILABLE = 77


def run_ansible_test(args: list[str], log: Path, rootfs: Path) -> tuple[str, float]:
    """Run .ci/ansible-test ARGS; its output (colours stripped) and how long it took. Skips
    (fails under CI) when the tools cannot be installed; fails on any other error."""
    env = {**os.environ, "DORCH_TEST_ROOTFS": str(rootfs)}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run([str(SCRIPT), *args], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=nspawn.REPO, timeout=1700)
    took = time.monotonic() - started
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    tail = "\n".join(text.splitlines()[-80:])
    if proc.returncode == TOOLS_UNAVAILABLE:
        reason = f"ansible tools could not be installed:\n{tail}"
        if in_ci():
            pytest.fail(reason + "\n(CI never skips this test)", pytrace=False)
        pytest.skip(reason)
    assert proc.returncode == 0, f".ci/ansible-test exited {proc.returncode} (log: {log}):\n{tail}"
    return text, took


def assert_stages(text: str, scenario: str, stages: tuple[str, ...]) -> None:
    """Every stage of the scenario ran (idempotence: the second converge changed nothing)."""
    for stage in stages:
        assert re.search(rf"\[{scenario} > {stage}\] Executed: Successful", text), stage


@pytest.mark.timeout(1800)
def test_role_is_lint_clean_and_passes_molecule(rootfs: Path, tmp_path: Path) -> None:
    text, took = run_ansible_test(["lint", "default"], tmp_path / "ansible-test.log", rootfs)
    assert "ansible-lint clean" in text
    assert_stages(text, "default",
                  ("create", "converge", "idempotence", "verify", "side_effect", "destroy"))
    # The role's no_log holds: the inventory's test tokens never reach the output.
    assert "emulator-token" not in text
    FACTS.append(f"ansible: lint + molecule default (2 hosts, 3+2 workers, scale 3->1) in {took:.0f} s")


@pytest.mark.timeout(1800)
def test_role_installs_the_deb_and_runs_tasks_on_the_local_bus(rootfs: Path, tmp_path: Path) -> None:
    text, took = run_ansible_test(["deb"], tmp_path / "ansible-test.log", rootfs)
    assert_stages(text, "deb", ("create", "prepare", "converge", "idempotence", "verify", "destroy"))
    FACTS.append(f"ansible: .deb built + molecule deb (1 host, local bus) in {took:.0f} s")
