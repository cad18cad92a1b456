"""Fixtures for the system tests: a Debian 12 root, a wheelhouse of dorch and its dependencies.

Under CI (``$CI`` set) a missing requirement FAILS the tests; elsewhere they are skipped with
the reason, so a developer without root is not blocked. ``$DORCH_TEST_ROOTFS`` (or
``$DORCH_ROOTFS``) picks the cached root (default .cache/rootfs-bookworm, built on first use by
.ci/build-rootfs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import nspawn

FACTS: list[str] = []  # figures printed at the end of the run (timings, exposure)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.system)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FACTS:
        terminalreporter.section("dorch system test figures")
        for line in FACTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def system_ready() -> None:
    """Fail (CI) or skip (elsewhere) when this host cannot boot containers."""
    problems = nspawn.missing_requirements()
    if problems:
        reason = "system tests cannot run: " + "; ".join(problems)
        if in_ci():
            pytest.fail(reason + " (CI never skips them)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def rootfs(system_ready: None) -> Path:
    path = Path(os.environ.get("DORCH_TEST_ROOTFS") or os.environ.get("DORCH_ROOTFS")
                or nspawn.DEFAULT_ROOTFS).resolve()
    started = time.monotonic()
    fresh = not (path / ".complete").exists()
    nspawn.ensure_rootfs(path)
    if fresh:
        FACTS.append(f"rootfs built in {time.monotonic() - started:.0f} s ({path})")
    else:
        FACTS.append(f"rootfs reused ({path})")
    return path


def _run(argv: list[str], what: str, timeout: float = 600) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, cwd=nspawn.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(argv)}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def wheelhouse(system_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dorch's wheel built from this tree, plus wheels of every dependency for Debian 12's
    Python 3.11 on this architecture: what a user copies to a host with no network."""
    out = tmp_path_factory.mktemp("wheelhouse")
    started = time.monotonic()
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(nspawn.REPO)],
         "building the dorch wheel")
    wheel = next(out.glob("dorch-*.whl"))
    # Dependency wheels are cached per pyproject.toml (same dependencies -> same wheels).
    digest = hashlib.sha256((nspawn.REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    cache = nspawn.REPO / ".cache" / f"wheelhouse-deps-{digest}"
    if (cache / ".complete").exists():
        for cached in cache.glob("*.whl"):
            shutil.copy2(cached, out)
        FACTS.append(f"wheelhouse: dorch built, dependencies cached, in "
                     f"{time.monotonic() - started:.0f} s")
        return out
    # The container runs Debian 12's CPython 3.11: a 3.11 host resolves natively (as a user
    # would); any other host asks for 3.11 manylinux wheels explicitly.
    target: list[str] = []
    if sys.version_info[:2] != (3, 11):
        target = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                  "--platform", f"manylinux_2_36_{platform.machine()}"]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--dest", str(out), *target, str(wheel)], "downloading dependency wheels")
    partial = cache.with_name(cache.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for dep in out.glob("*.whl"):
        if dep != wheel:
            shutil.copy2(dep, partial)
    (partial / ".complete").touch()
    with contextlib.suppress(OSError):  # another run may have cached the same set first
        partial.rename(cache)
    shutil.rmtree(partial, ignore_errors=True)
    FACTS.append(f"wheelhouse: {len(list(out.glob('*.whl')))} wheels in "
                 f"{time.monotonic() - started:.0f} s")
    return out


@pytest.fixture(scope="session")
def containers_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("containers")
