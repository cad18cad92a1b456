"""What a task costs on Discord: at most 7 requests besides polling, each one something a user
sees (the thread that claims it, the receipt that becomes the answer, the #results line, the
archived thread whose name shows how it ended, and the worker's board row: RUNNING; a
restart is not shown, and READY only once the queue is empty). The thread shows the claim, so
no ✅; the outcome rides on the archive, so no 🏁."""

from __future__ import annotations

from collections import Counter

from tests.support.world import World, eventually, reactions

TASKS = 3
POLL = "GET /channels/{channel_id}/messages"
# asked once per host and bot per hour (the preflight: `dorch doctor`'s checks), not per task
PREFLIGHT = {"GET /users/@me", "GET /applications/@me", "GET /users/@me/guilds",
             "GET /guilds/{guild_id}/members/{user_id}", "GET /channels/{channel_id}"}
THREAD = "POST /channels/{channel_id}/messages/{message_id}/threads"
POST = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
ARCHIVE = "PATCH /channels/{channel_id}"


def test_a_task_costs_at_most_seven_requests_all_of_them_visible(world: World) -> None:
    ids = [world.post(f"Count to {n}") for n in range(TASKS)]
    world.fleet(1)
    eventually(lambda: all(m.get("thread", {}).get("thread_metadata", {}).get("archived")
                           for m in world.messages("task-queue")), 60, "every task finished")
    board = world.messages("worker-pool")
    eventually(lambda: "READY" in world.messages("worker-pool")[0]["content"], 30,
               "the board's READY once the queue is empty")
    assert len(board) == 1
    routes = Counter(r.route for r in world.emu.requests
                     if (r.bot or "").startswith("worker") and r.route not in PREFLIGHT
                     and r.route != POLL)

    # one of each per task, exactly: the claim, the answer, the summary, the archive
    assert routes[THREAD] == TASKS
    assert routes[ARCHIVE] == TASKS
    assert routes[POST] == 2 * TASKS + 1  # the receipt, the #results line; the board row once
    # no reactions at all: the thread is the claim, its name the outcome
    assert not any("/reactions/" in route for route in routes), routes
    # the answer (the receipt edited), and the board: RUNNING per task (the first one is the
    # board row's post) and one READY once the queue is empty
    answers = TASKS
    assert answers <= routes[EDIT] <= answers + (TASKS - 1) + 1
    per_task = (sum(routes.values()) - 1 - 1) / TASKS  # the board row's post, the last READY
    print("\nrequests per task:", per_task, dict(routes))
    assert per_task <= 7, routes
    assert set(routes) <= {THREAD, POST, EDIT, ARCHIVE}, routes

    for task in ids:
        msg = next(m for m in world.messages("task-queue") if m["id"] == task)
        assert not reactions(msg)
        assert msg["thread"]["name"].startswith(f"🏁 task {task}: Count to")
