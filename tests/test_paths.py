"""Where private state goes: the service's own 0700 directory, never a foreign or shared one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dorch import paths
from dorch.config import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DORCH_DATA_DIR", "INVOCATION_ID", "STATE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_a_service_keeps_its_state_in_the_private_dir_not_beside_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = tmp_path / "var-lib-dorch"
    monkeypatch.setattr(paths, "SERVICE_PRIVATE_DIR", service / "private")
    monkeypatch.setattr(paths, "SERVICE_QUEUE", service / "queue" / "queue.sqlite3")
    (service / "private").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    assert paths.private_dir() == service / "private"
    assert paths.default_queue() == service / "queue" / "queue.sqlite3"
    assert paths.private_dir() != paths.default_queue().parent


def test_another_users_service_dir_is_not_used(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """root's timer running `dorch submit` under systemd: the workers' private dir is not root's."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory of another user")
    foreign = tmp_path / "private"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 47_999, 47_999)
    monkeypatch.setattr(paths, "SERVICE_PRIVATE_DIR", foreign)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    assert paths.private_dir() == tmp_path / "xdg" / "dorch"


def test_a_users_data_dir_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o775)
    data.chmod(0o775)
    monkeypatch.setenv("DORCH_DATA_DIR", str(data))
    assert paths.private_dir() == data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_a_foreign_data_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory of another user")
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    os.chown(data, 47_999, 47_999)
    monkeypatch.setenv("DORCH_DATA_DIR", str(data))
    with pytest.raises(ConfigError, match="not by you"):
        paths.private_dir()
