"""What every benchmark shares: the machine it ran on, a plain table, the JSON it leaves behind.

Benchmarks print their figures and write ``bench/results/<name>.json`` (not kept in git; the
latest figures are copied by hand into bench/README.md with the machine they came from).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere: the project and its tests
    sys.path.insert(0, str(ROOT))


def compile_project() -> None:
    """Bytecode for the checkout's modules, as an installed package has: without it (e.g. with
    PYTHONDONTWRITEBYTECODE set) every worker start would compile dorch again."""
    import compileall

    for folder in (ROOT / "dorch", ROOT / "tests" / "support"):
        compileall.compile_dir(folder, quiet=1)


def as_a_service() -> None:
    """Start workers with the environment a systemd service gets, not the shell's: a shell may
    set $SSL_CERT_FILE or $SSL_CERT_DIR (a service has neither), and with them a worker loads the
    whole CA bundle at start-up instead of on demand (dorch/discord/tls.py)."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        os.environ.pop(name, None)


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS and Python: figures mean nothing without them."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], int | float) for r in rows) if rows else False
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 (inclusive method: fine for the small samples benchmarks take)."""
    if len(values) < 2:
        only = float(values[0]) if values else float("nan")
        return {"p50": only, "p95": only, "p99": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def heading(text: str) -> None:
    """A benchmark's title; also readies what it measures: compiled, started as a service is."""
    compile_project()
    as_a_service()
    print(f"\n== {text}", flush=True)


def default_worker_settings() -> dict[str, Any]:
    """The [worker] settings a user gets without configuring any (the test world's are faster)."""
    from dorch.config import SCHEMA

    keys = ("poll_interval", "max_idle_time", "lease_seconds", "heartbeat_seconds",
            "max_attempts", "task_timeout", "stop_grace")
    return {k: SCHEMA["worker"][k].default for k in keys}


@contextlib.contextmanager
def discord_world(emulator: Any = None, **configure: Any) -> Iterator[Any]:
    """The test suite's World (tests/support/world.py): the emulator with Discord's realistic
    limits, a dorch home configured for it, fleets of real worker processes; all torn down."""
    from dorch_emulator import Emulator

    from tests.support.helpers import DorchHome
    from tests.support.world import World, world_config

    with tempfile.TemporaryDirectory(prefix="dorch-bench-") as tmp, \
            Emulator.running(emulator or world_config()) as emu:
        world = World(emu, DorchHome(Path(tmp)), Path(tmp))
        world.configure(**configure)
        try:
            yield world
        finally:
            for fleet in world.fleets:
                fleet.stop()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll PREDICATE until truthy; raise TimeoutError naming WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def snowflake_time(snowflake: str | int) -> float:
    """Unix time a Discord id was made."""
    return ((int(snowflake) >> 22) + 1420070400000) / 1000
