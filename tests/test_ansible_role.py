"""The Ansible role carries its own copy of the units, byte for byte those of systemd/.

The role must work when copied out of the repository (or packaged as a collection), so it holds
real files, not links out of itself; and a host deployed with the role must run the same units
as one with the .deb or a manual install, so the copies may not drift from systemd/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "ansible" / "roles" / "dorch_worker"
UNITS = sorted(p.name for p in (REPO / "systemd").iterdir() if p.name != "README.md")


def test_the_role_holds_the_units_of_systemd_and_nothing_else() -> None:
    assert "dorch-worker@.service" in UNITS
    assert sorted(p.name for p in (ROLE / "files").iterdir()) == UNITS


@pytest.mark.parametrize("name", UNITS)
def test_the_role_holds_a_byte_identical_copy_of_each_unit(name: str) -> None:
    copy = ROLE / "files" / name
    assert copy.is_file() and not copy.is_symlink(), f"{copy} must be a file, not a link"
    assert copy.read_bytes() == (REPO / "systemd" / name).read_bytes(), (
        f"{copy.relative_to(REPO)} differs from systemd/{name}: copy it over "
        f"(cp systemd/{name} {copy.relative_to(REPO)})"
    )


def test_nothing_in_the_role_links_out_of_it() -> None:
    outside = [str(p.relative_to(ROLE)) for p in ROLE.rglob("*")
               if p.is_symlink() and ROLE.resolve() not in p.resolve().parents]
    assert outside == []


def test_the_exec_start_drop_in_runs_what_the_unit_runs() -> None:
    """The drop-in for another install dir changes the path of dorch, nothing else."""
    unit = (ROLE / "files" / "dorch-worker@.service").read_text()
    dropin = (ROLE / "templates" / "exec-start.conf.j2").read_text()
    shipped = re.findall(r"(?m)^ExecStart=(.*)$", unit)
    lines = re.findall(r"(?m)^ExecStart=(.*)$", dropin)
    assert lines[0] == "", "the drop-in must clear the unit's ExecStart= first"
    rendered = (lines[1].replace("{{ _dorch_worker_bin }}", "/opt/dorch/bin/dorch")
                .replace("{{ _dorch_worker_config_file }}", "/etc/dorch/config.toml"))
    assert [rendered] == shipped
