"""The entry point's fast path for `dorch worker` (no CLI framework on every task's start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dorch.main import _worker_args
from tests.support.helpers import DORCH, DorchHome


@pytest.mark.parametrize(("argv", "expected"), [
    (["worker"], (None, None)),
    (["worker", "--instance", "3"], (None, "3")),
    (["worker", "-i", "3"], (None, "3")),
    (["worker", "--instance=3"], (None, "3")),
    (["-c", "/etc/x.toml", "worker", "--instance", "2"], ("/etc/x.toml", "2")),
    (["worker", "--config=/etc/x.toml"], ("/etc/x.toml", None)),
    (["worker", "--help"], None),
    (["worker", "--instance"], None),
    (["worker", "--instanse", "2"], None),
    (["--instance", "2", "worker"], None),
    (["status"], None),
    ([], None),
])
def test_only_plain_worker_invocations_take_the_fast_path(
        argv: list[str], expected: tuple[str | None, str | None] | None) -> None:
    assert _worker_args(argv) == expected


def test_the_fast_path_does_not_load_the_cli_framework(tmp_path: Path) -> None:
    code = ("import sys; sys.argv = ['dorch', 'worker', '--instance', '1']\n"
            "import dorch.main\n"
            "try:\n    dorch.main.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, 'typer' in sys.modules)")
    home = DorchHome(tmp_path)
    home.configure(worker={"max_idle_time": 0.0})
    out = subprocess.run([sys.executable, "-c", code], env=home.env(), capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_a_worker_with_a_typo_gets_the_cli_s_usage_error(tmp_path: Path) -> None:
    home = DorchHome(tmp_path)
    home.configure()
    done = subprocess.run([DORCH, "worker", "--instanse", "1"], env=home.env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--instanse" in done.stderr
