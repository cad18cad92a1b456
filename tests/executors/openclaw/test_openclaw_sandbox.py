"""The real OpenClaw CLI inside the bubblewrap sandbox: it reads its config and its install
read-only, writes its state into a per-task home, and its tools write into the workspace only."""

from __future__ import annotations

import pytest

from tests.executors.openclaw.conftest import Fleet
from tests.support.fake_model import rule, text, tool
from tests.support.helpers import needs_bwrap

pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(600)]


def test_openclaw_runs_in_the_sandbox_and_its_state_does_not_outlive_the_task(
    fleet: Fleet,
) -> None:
    needs_bwrap()
    fleet.configure()
    with open(fleet.home.config_path) as f:
        config = f.read()
    fleet.home.config_path.write_text(config.replace('isolation = "none"',
                                                     'isolation = "bubblewrap"'))
    fleet.fake.rules = [rule(
        tool("write", path="out/hello.txt", content="written in the sandbox\n"),
        text("I wrote out/hello.txt."), match="Sandbox test")]
    task_id = fleet.submit("Sandbox test: write out/hello.txt")
    worker = fleet.start_worker("1")
    assert fleet.finish(worker) == 0, fleet.log(worker)
    assert "agent isolation: sandboxed by bubblewrap" in fleet.log(worker)

    view = fleet.result(task_id)
    assert view["state"] == "succeeded", (view["result"], fleet.log(worker))
    assert view["result"]["output"] == "I wrote out/hello.txt."
    workspace = fleet.workspace(task_id)
    assert (workspace / "out" / "hello.txt").read_text() == "written in the sandbox\n"
    # OpenClaw's per-task state lived in the sandbox's home: nothing in the worker's state dir
    assert not (fleet.state_dir("1") / "openclaw").exists()
