"""The .deb on a clean Debian 12 with no network: install, a task under systemd, upgrade, purge.

``packaging/build-deb`` builds the package; a freshly booted Debian 12 container (the cached root,
with python3-venv removed so the package cannot lean on it) installs it with no apt sources and
inside a network namespace that has nothing but a loopback interface: no mirror can be reached.
The wheel and sdist of ``python -m build`` and ``pipx install`` of that wheel are checked on the
same Debian 12, offline too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import dorch

from . import nspawn
from .conftest import FACTS

VERSION = dorch.__version__
HOST = "dorchdeb"
# Offline: a fresh network namespace has only `lo` (down) and no route anywhere.
OFFLINE = "unshare --net env DEBIAN_FRONTEND=noninteractive"
# What the package may not touch, and the test's own files: the package managers' databases,
# caches and logs, and /root/t (this test's scratch files).
PRUNE = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/cache/debconf", "/var/log",
         "/root/t")
SNAPSHOT = ("find / -xdev \\( " + " -o ".join(f"-path {p}" for p in PRUNE)
            + " \\) -prune -o -print | LC_ALL=C sort")
# The purge policy (packaging/README.md): the state and the system user stay.
KEPT = "/var/lib/dorch"
LOCAL_CONFIG = '\n[executor]\nkind = "echo"\n\n[worker]\npoll_interval = 0.2\n'

pytestmark = pytest.mark.timeout(600)  # the first test also builds the .deb (about 1-2 min)


def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll PROBE until true; fail naming WHAT at the deadline."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.2)


class Host:
    """The container as an admin sees a server: a shell over SSH."""

    def __init__(self, c: nspawn.Container, deb: str) -> None:
        self.c = c
        self.deb = deb

    def sh(self, command: str, check: bool = True, timeout: float = 120) -> str:
        return self.c.ssh(command, check=check, timeout=timeout).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def use_echo_agent(self) -> None:
        """The shipped config (one queue for services and admin) plus an agent: echo."""
        self.c.write("/etc/dorch/config.toml",
                     self.sh("cat /etc/dorch/config.example.toml") + LOCAL_CONFIG)

    def start_worker(self, instance: str) -> str:
        """Start dorch-worker@INSTANCE, wait until it is active; its MainPID."""
        self.sh(f"systemctl start dorch-worker@{instance}")
        wait_for(lambda: self.show(f"dorch-worker@{instance}", "ActiveState")["ActiveState"]
                 == "active", 30, f"dorch-worker@{instance} to be active")
        return self.show(f"dorch-worker@{instance}", "MainPID")["MainPID"]

    def run_task(self, prompt: str) -> dict[str, object]:
        tid = self.sh(f"dorch submit {shlex.quote(prompt)}").strip()
        out = self.sh(f"dorch result {tid} --wait --timeout 60 --json", check=False)
        assert out.strip(), f"task {tid} did not finish within 60 s"
        view: dict[str, object] = json.loads(out)
        return view

    def package_status(self, package: str) -> str:
        """dpkg's status word: installed, config-files, not-installed ('' if never known)."""
        return self.sh(f"dpkg-query -W -f='${{db:Status-Status}}' {package} 2>/dev/null",
                       check=False)


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def deb(rootfs: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's build command, with the dependency wheels the other system tests use."""
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    proc = subprocess.run(
        [str(nspawn.REPO / "packaging" / "build-deb"), "--wheelhouse", str(wheelhouse),
         "--out", str(out)],
        env={**os.environ, "DORCH_TEST_ROOTFS": str(rootfs), "PYTHON": sys.executable},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"packaging/build-deb failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    path = out / f"dorch_{VERSION}_{_arch()}.deb"
    assert path.is_file(), proc.stdout
    FACTS.append(f".deb built in {time.monotonic() - started:.0f} s: {path.name}, "
                 f"{path.stat().st_size / 1e6:.1f} MB")
    return path


@pytest.fixture(scope="module")
def host(rootfs: Path, deb: Path, containers_dir: Path) -> Iterator[Host]:
    """A fresh Debian 12 with no apt sources and no python3-venv, then `apt install ./dorch.deb`
    in a network namespace with no route."""
    with nspawn.boot(rootfs, containers_dir, HOST, copy_in={f"/root/t/{deb.name}": deb}) as c:
        h = Host(c, f"/root/t/{deb.name}")
        h.sh("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && "
             "dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl "
             f">/dev/null && {SNAPSHOT} > /root/t/before")
        started = time.monotonic()
        h.sh(f"{OFFLINE} sh -ec 'ip -o link show > /root/t/links; "
             "{ ip route show; ip -6 route show; } > /root/t/routes; "
             f"apt-get install -y {h.deb} > /root/t/install.log 2>&1' "
             "|| { cat /root/t/install.log; exit 1; }", timeout=300)
        FACTS.append(f"apt install ./{deb.name} (offline, container booted in "
                     f"{c.boot_seconds:.1f} s) took {time.monotonic() - started:.1f} s")
        yield h


def test_install_offline_gives_dorch_its_user_units_and_config_and_starts_nothing(
    host: Host,
) -> None:
    h = host
    links = [line.split(":")[1].strip() for line in h.sh("cat /root/t/links").splitlines()]
    assert links == ["lo"], links
    assert h.sh("cat /root/t/routes") == ""
    assert h.sh("ls /etc/apt/sources.list.d; ls /etc/apt/sources.list 2>/dev/null || true") == ""
    assert "Setting up dorch" in h.sh("cat /root/t/install.log")
    assert h.package_status("python3-venv") == "not-installed"

    assert h.sh("command -v dorch").strip() == "/usr/bin/dorch"
    assert h.sh("dorch --version").strip() == f"dorch {VERSION}"
    assert h.sh("id -nG dorch").split() == ["dorch"]
    assert h.sh("cat /etc/dorch/config.toml") == h.sh("cat /etc/dorch/config.example.toml")
    assert h.sh("dpkg-query -W -f='${Conffiles}' dorch").split()[0] == (
        "/etc/dorch/config.example.toml")
    # The units are known to systemd (daemon-reload ran) but nothing runs or is enabled.
    assert h.show("dorch-worker@1", "LoadState", "FragmentPath") == {
        "LoadState": "loaded", "FragmentPath": "/lib/systemd/system/dorch-worker@.service"}
    assert h.sh("systemctl is-enabled dorch-workers.target", check=False).strip() == "disabled"
    assert h.sh("systemctl list-units --no-legend --plain --state=active 'dorch*'") == ""
    # The Discord emulator is a separate distribution, kept off servers; the command says so.
    assert h.sh("dpkg -L dorch | grep -c dorch_emulator || true").strip() == "0"
    out = h.sh("dorch emulator 2>&1; echo exit=$?", check=False)
    assert "exit=78" in out and "pip install ./emulator" in out, out


def test_dorch_demo_runs_from_the_package_and_writes_nothing_into_it(host: Host) -> None:
    out = host.sh("cd /root && dorch demo", timeout=120)
    assert "6/6 tasks succeeded" in out and "All workers stopped cleanly." in out, out
    # The shipped bytecode is current: root (who could write there) added no __pycache__ file.
    extra = host.sh("find /opt/dorch | LC_ALL=C sort > /root/t/opt && dpkg -L dorch | "
                    "LC_ALL=C sort | comm -23 /root/t/opt -")
    assert extra == "", f"files in /opt/dorch that dpkg does not know: {extra}"


def test_a_worker_unit_runs_a_task_with_the_shipped_config(host: Host) -> None:
    h = host
    h.use_echo_agent()
    h.start_worker("1")
    view = h.run_task("hello from the .deb")
    assert view["state"] == "succeeded", view
    assert view["worker"] == f"{HOST}-1"
    result = view["result"]
    assert isinstance(result, dict) and result["output"].strip() == "hello from the .deb"
    assert h.sh("stat -c '%U %G' /var/lib/dorch/queue/queue.sqlite3").split() == ["dorch", "dorch"]


def test_an_upgrade_restarts_running_workers_only_and_keeps_the_config(host: Host) -> None:
    h = host
    h.use_echo_agent()
    config = h.sh("cat /etc/dorch/config.toml")
    # An idle worker (no task queued) keeps its process until something restarts it.
    before = h.start_worker("1")
    h.sh("systemctl stop dorch-worker@2")
    h.sh(f"{OFFLINE} apt-get install -y --reinstall {h.deb} > /root/t/upgrade.log 2>&1 "
         "|| { cat /root/t/upgrade.log; exit 1; }", timeout=300)
    after = h.show("dorch-worker@1", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and after["MainPID"] not in ("0", before), after
    assert h.show("dorch-worker@2", "ActiveState")["ActiveState"] == "inactive"
    assert h.sh("cat /etc/dorch/config.toml") == config
    assert h.run_task("after the upgrade")["state"] == "succeeded"


def test_purge_stops_workers_and_leaves_only_the_state_and_the_user(host: Host) -> None:
    h = host
    h.use_echo_agent()
    h.start_worker("1")
    assert h.run_task("before the purge")["state"] == "succeeded"
    h.sh("systemctl enable dorch-worker@2 dorch-workers.target")
    owned = h.sh("dpkg -L dorch").split("\n")
    h.sh(f"{OFFLINE} apt-get purge -y dorch > /root/t/purge.log 2>&1 "
         "|| { cat /root/t/purge.log; exit 1; }", timeout=300)

    assert h.package_status("dorch") in ("", "not-installed")  # not even config-files
    assert h.show("dorch-worker@1", "ActiveState")["ActiveState"] == "inactive"
    before = set(h.sh("cat /root/t/before").splitlines())
    after = set(h.sh(SNAPSHOT).splitlines())
    assert sorted(before - after) == [], "purge removed files that were there before the install"
    left = sorted(p for p in after - before if p != KEPT and not p.startswith(KEPT + "/"))
    assert left == [], f"purge left files behind: {left}"
    assert [p for p in owned if p and p not in before and p in after] == []
    # Documented as kept: the queue (with its results) and the user that owns it.
    assert h.sh(f"stat -c %U {KEPT}/queue/queue.sqlite3").strip() == "dorch"
    assert h.sh("getent passwd dorch").startswith("dorch:")
    assert h.sh("ls /etc/systemd/system/dorch-workers.target.wants 2>&1 || true").strip().endswith(
        "No such file or directory")


@pytest.fixture(scope="module")
def dists(system_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(nspawn.REPO)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"python -m build failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    FACTS.append(f"python -m build (sdist + wheel) in {time.monotonic() - started:.0f} s")
    return out


@pytest.fixture(scope="module")
def pipx_wheels(system_ready: None) -> Path:
    """pipx and its dependencies as wheels for Python 3.11, cached once."""
    cache = nspawn.REPO / ".cache" / "pipx-wheels-cp311"
    if not (cache / ".complete").exists():
        partial = cache.with_name(cache.name + ".partial")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", "3.11", "--dest", str(partial), "pipx"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            pytest.fail(f"downloading pipx failed:\n{proc.stderr}", pytrace=False)
        (partial / ".complete").touch()
        partial.rename(cache)
    return cache


def test_wheel_and_sdist_build_and_pipx_installs_the_wheel_offline(
    rootfs: Path, dists: Path, wheelhouse: Path, pipx_wheels: Path, containers_dir: Path,
) -> None:
    sdist = dists / f"dorch-{VERSION}.tar.gz"
    wheel = dists / f"dorch-{VERSION}-py3-none-any.whl"
    assert sorted(p.name for p in dists.iterdir()) == sorted([sdist.name, wheel.name])
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    for needed in ("pyproject.toml", "dorch/__init__.py", "dorch/cli/__init__.py"):
        assert f"dorch-{VERSION}/{needed}" in names, names
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(f"dorch-{VERSION}.dist-info/entry_points.txt").decode()
    assert "dorch = dorch.main:main" in entry_points
    with zipfile.ZipFile(wheel) as zf:
        assert not [n for n in zf.namelist() if n.startswith("dorch_emulator")], "emulator in the wheel"

    copy_in = {"/root/dist": dists, "/root/wheelhouse": wheelhouse, "/root/pipx": pipx_wheels}
    with nspawn.boot(rootfs, containers_dir, "dorchpipx", copy_in=copy_in) as c:
        c.ssh("python3 -m venv /root/pipx-venv && /root/pipx-venv/bin/pip install --quiet "
              "--no-index --disable-pip-version-check --find-links /root/pipx pipx", timeout=300)
        started = time.monotonic()
        # The README's command, offline: pipx's own pip comes from Debian's ensurepip.
        c.ssh(f"{OFFLINE} PIPX_DISABLE_SHARED_LIBS_AUTO_UPGRADE=1 /root/pipx-venv/bin/pipx "
              "install --pip-args='--no-index --find-links /root/wheelhouse' "
              f"/root/dist/{wheel.name}", timeout=300)
        FACTS.append(f"pipx install (offline) took {time.monotonic() - started:.1f} s")
        assert c.ssh("/root/.local/bin/dorch --version").stdout.strip() == f"dorch {VERSION}"
        out = c.ssh("cd /tmp && /root/.local/bin/dorch demo", timeout=120).stdout
        assert "6/6 tasks succeeded" in out, out
