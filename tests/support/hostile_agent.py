"""A hostile agent for the isolation tests: it tries each attack it is asked for and records
what happened, as JSON, in its answer (stdout) and in ``hostile.json`` in its working directory
(rewritten after every attack, so a report survives an agent killed half-way).

Usage: hostile_agent.py [ATTACK[,ATTACK...] [name=value ...]]; the words of the prompt (stdin)
are appended to these arguments, so one configured agent can run different attacks per task.

Standard library only (it also runs with a system python3 in the systemd system test).
Each attack's entry has ``escaped``: true when the attack WORKED (bad for dorch), plus details.
Every file it managed to read is listed under ``read`` with its first bytes, so a test can look
for a secret in the whole report.

Attacks and their options (a path list is colon-separated):
  proc         read /proc/PID/environ and /proc/PID/mem of every ancestor and of ``pids=``
  creds        read every file under $CREDENTIALS_DIRECTORY (own env, or found in an ancestor's
               environ), /run/credentials and ``creds=``
  walk         read every file under ``walk=`` (default /var/lib/dorch:/etc/dorch), except the
               agent's own working directory
  queue        open each of ``queue=`` (default /var/lib/dorch/queue.sqlite3) for writing
  outbox       open every file named *outbox* under ``walk=`` for writing
  plant        write a config file at each of ``configs=`` (default ~/.config/dorch/config.toml
               and /etc/dorch/config.toml)
  persist      leave a marker file in $HOME, /tmp, /var/tmp and each of ``leave=``
  check        look for markers left by an earlier task in those places (escaped: one found)
  daemon       start ``setsid sleep DAEMON`` (``daemon=`` seconds, default 6007.5) in the
               background, so a test can look for that exact command line afterwards
  fork         fork ``count=`` (default 100) children that sleep ``hold=`` s
  memory       allocate and touch 16 MiB blocks up to ``mem_mb=`` (default 100000), then hold
  disk         write 16 MiB blocks into files under ``disk_dir=`` (default: cwd) up to
               ``disk_mb=`` (default 100000) in total, a new file whenever one is too large
  print        after the report, print ``print_mb=`` (default 500) MiB on ONE line to stdout
  env          record the agent's own environment (escaped: it holds a credential path, the
               notify socket or a DORCH_SECRET_* variable)
  signal       check with signal 0 whether each of ``pids=`` (e.g. the worker) can be signalled
  sleep        sleep ``hold=`` s (so a test can kill the worker meanwhile); writes
               ``ready`` into the workspace first
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

MARKER = "dorch-hostile-marker"
BLOCK = 16 * 1024 * 1024


class Agent:
    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.cwd = os.path.realpath(os.getcwd())
        self.report: dict = {"pid": os.getpid(), "uid": os.getuid(), "cwd": self.cwd,
                             "ancestors": ancestors(), "attacks": {}, "read": {}}

    def opt(self, name: str, default: str) -> str:
        return self.options.get(name, default)

    def paths(self, name: str, default: str) -> list[str]:
        return [os.path.expanduser(p) for p in self.opt(name, default).split(":") if p]

    def save(self) -> None:
        tmp = os.path.join(self.cwd, "hostile.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.report, f, indent=1)
        os.replace(tmp, os.path.join(self.cwd, "hostile.json"))

    def record(self, attack: str, escaped: bool, **detail: object) -> None:
        self.report["attacks"][attack] = {"escaped": escaped, **detail}
        self.save()

    def read(self, path: str) -> bool:
        """Try to read PATH; note what was read. True when it worked."""
        try:
            with open(path, "rb") as f:
                data = f.read(4096)
        except OSError as exc:
            self.report["read"].setdefault("failed", {})[path] = exc.strerror
            return False
        self.report["read"][path] = data[:200].decode("utf-8", "replace")
        return True

    def walk(self, roots: list[str]) -> list[str]:
        """Read every file under ROOTS (not the own workspace); the paths read."""
        got: list[str] = []
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                if os.path.realpath(dirpath).startswith(self.cwd):
                    dirnames[:] = []
                    continue
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if len(got) < 500 and not os.path.islink(path) and self.read(path):
                        got.append(path)
        return got

    # -- attacks -----------------------------------------------------------------------------

    def proc(self) -> None:
        pids = [a["pid"] for a in self.report["ancestors"]]
        pids += [int(p) for p in self.paths("pids", "")]
        results = {}
        for pid in pids:
            environ = self.read(f"/proc/{pid}/environ")
            mem = read_mem(pid)
            results[str(pid)] = {"environ": environ, "mem": mem}
        escaped = any(r["environ"] or r["mem"] for r in results.values())
        self.record("proc", escaped, pids=results)

    def creds(self) -> None:
        roots = {"/run/credentials", *self.paths("creds", "")}
        if os.environ.get("CREDENTIALS_DIRECTORY"):
            roots.add(os.environ["CREDENTIALS_DIRECTORY"])
        for entry in self.report["ancestors"]:
            env = environ_of(entry["pid"])
            if env.get("CREDENTIALS_DIRECTORY"):
                roots.add(env["CREDENTIALS_DIRECTORY"])
        got = self.walk(sorted(roots))
        self.record("creds", bool(got), roots=sorted(roots), files=got)

    def walk_attack(self) -> None:
        roots = self.paths("walk", "/var/lib/dorch:/etc/dorch")
        got = self.walk(roots)
        self.record("walk", bool(got), roots=roots, files=got)

    def queue(self) -> None:
        opened = [p for p in self.paths("queue", "/var/lib/dorch/queue.sqlite3") if writable(p)]
        self.record("queue", bool(opened), opened=opened)

    def outbox(self) -> None:
        found, opened = [], []
        for root in self.paths("walk", "/var/lib/dorch"):
            for dirpath, _, filenames in os.walk(root):
                for name in filenames:
                    if "outbox" in name:
                        path = os.path.join(dirpath, name)
                        found.append(path)
                        if writable(path):
                            opened.append(path)
        self.record("outbox", bool(opened), found=found, opened=opened)

    def plant(self) -> None:
        written = []
        for path in self.paths("configs", "~/.config/dorch/config.toml:/etc/dorch/config.toml"):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a") as f:
                    f.write(f"# {MARKER}: planted by a hostile agent\n")
                written.append(path)
            except OSError:
                pass
        self.record("plant", bool(written), written=written)

    def places(self) -> list[str]:
        home = os.environ.get("HOME", "")
        return [p for p in [home, "/tmp", "/var/tmp", *self.paths("leave", "")] if p]

    def persist(self) -> None:
        left = []
        for place in self.places():
            path = os.path.join(place, MARKER)
            try:
                with open(path, "w") as f:
                    f.write(f"left by task pid {os.getpid()}\n")
                left.append(path)
            except OSError:
                pass
        # "escaped" only says the files were written; whether they survive is what `check` sees.
        self.record("persist", False, left=left)

    def check(self) -> None:
        found = [p for p in (os.path.join(place, MARKER) for place in self.places())
                 if os.path.exists(p)]
        self.record("check", bool(found), found=found)

    def daemon(self) -> None:
        seconds = self.opt("daemon", "6007.5")
        child = subprocess.Popen(["setsid", "sleep", seconds], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        # escaped is decided by the test (is `sleep SECONDS` alive after the task?)
        self.record("daemon", False, pid=child.pid, command=f"sleep {seconds}")

    def fork(self) -> None:
        count, hold = int(self.opt("count", "100")), float(self.opt("hold", "5"))
        started, error = 0, ""
        for _ in range(count):
            try:
                pid = os.fork()
            except OSError as exc:
                error = exc.strerror or str(exc)
                break
            if pid == 0:
                time.sleep(hold)
                os._exit(0)
            started += 1
        self.record("fork", started >= count, started=started, error=error)
        time.sleep(hold)

    def memory(self) -> None:
        limit, hold = int(self.opt("mem_mb", "100000")), float(self.opt("hold", "5"))
        blocks: list[bytearray] = []
        error = ""
        while len(blocks) * 16 < limit:
            try:
                blocks.append(bytearray(BLOCK))
            except MemoryError:
                error = "MemoryError"
                break
        self.record("memory", not error, allocated_mb=len(blocks) * 16, error=error)
        time.sleep(hold)

    def disk(self) -> None:
        target = int(self.opt("disk_mb", "100000")) * 1024 * 1024
        where = self.opt("disk_dir", self.cwd)
        hold = float(self.opt("hold", "5"))
        written, files, error = 0, 0, ""
        block = b"d" * BLOCK
        while written < target and files < 1000:
            path = os.path.join(where, f"fill-{files}")
            files += 1
            try:
                with open(path, "wb", buffering=0) as f:
                    while written < target:
                        written += f.write(block)
            except OSError as exc:
                error = exc.strerror or str(exc)
                if exc.errno != 27:   # EFBIG: this file is full, try the next one
                    break
        self.record("disk", not error, written_mb=written // (1024 * 1024), error=error)
        time.sleep(hold)

    def env(self) -> None:
        leaks = [k for k in os.environ if k in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET")
                 or k.startswith("DORCH_SECRET_")]
        self.record("env", bool(leaks), leaks=leaks, environ=dict(os.environ))

    def signal(self) -> None:
        reached = {}
        for pid in self.paths("pids", ""):
            try:
                os.kill(int(pid), 0)
                reached[pid] = "can be signalled"
            except OSError as exc:
                reached[pid] = exc.strerror or str(exc)
        escaped = any(v == "can be signalled" for v in reached.values())
        self.record("signal", escaped, pids=reached)

    def sleep(self) -> None:
        with open(os.path.join(self.cwd, "ready"), "w") as f:
            f.write(str(os.getpid()))
        self.record("sleep", False)
        time.sleep(float(self.opt("hold", "600")))


def ancestors() -> list[dict]:
    out, pid = [], os.getppid()
    while pid > 1 and len(out) < 50:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            break
        out.append({"pid": pid, "cmdline": cmdline[:300]})
        pid = int(stat[stat.rfind(b")") + 2:].split()[1])
    return out


def environ_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def read_mem(pid: int) -> bool:
    """Whether any byte of PID's memory could be read through /proc/PID/mem."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            regions = [line.split()[0] for line in f if " r" in line[17:40]]
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for region in regions[:20]:
                start = int(region.split("-")[0], 16)
                try:
                    mem.seek(start)
                    if mem.read(16):
                        return True
                except OSError:
                    continue
    except (OSError, ValueError):
        return False
    return False


def writable(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return False
    os.close(fd)
    return True


def main() -> int:
    words = sys.argv[1:] + sys.stdin.read().split()
    attacks = ",".join(w for w in words if "=" not in w).split(",")
    options = dict(w.split("=", 1) for w in words if "=" in w)
    agent = Agent(options)
    agent.save()
    for attack in attacks:
        if attack in ("print", ""):
            continue
        method = getattr(agent, "walk_attack" if attack == "walk" else attack, None)
        if method is None:
            print(f"unknown attack {attack!r}", file=sys.stderr)
            return 64
        method()
    out = sys.stdout
    out.write(json.dumps(agent.report) + "\n")
    out.flush()
    if "print" in attacks:
        total = int(float(agent.opt("print_mb", "500")) * 1024 * 1024)
        chunk = "y" * (1024 * 1024)
        try:
            for _ in range(total // len(chunk)):
                out.write(chunk)
            out.write("\n")
            out.flush()
        except OSError as exc:
            print(f"print stopped: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
