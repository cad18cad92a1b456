"""One task through the Discord bus end to end, as a user sees it in each channel."""

from __future__ import annotations

from collections import Counter

from tests.support.world import World, eventually, reactions, thread_messages


def test_submit_run_and_read_the_result(world: World) -> None:
    submitted = world.dorch("submit", "Write a haiku about queues [thinking:low]")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert task_id.isdigit()

    queue = world.messages("task-queue")
    assert [m["id"] for m in queue] == [task_id]
    assert "Write a haiku about queues [thinking:low]" in queue[0]["content"]

    start = len(world.emu.requests)
    world.fleet(1)
    done = world.dorch("result", task_id, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done: Write a haiku about queues"
    assert len(world.executions()) == 1

    # archiving the thread is the worker's last step: wait for it, then everything before it is there
    eventually(lambda: world.messages("task-queue")[0]["thread"]["thread_metadata"]["archived"],
               30, "the task thread to be archived")
    # the claim receipt, posted first, became the answer: one message in the thread
    posts = [r for r in world.emu.requests
             if r.method == "POST" and r.path == f"/channels/{task_id}/messages"]
    assert len(posts) == 1 and posts[0].body["content"].startswith("🔒 claimed by **")
    (answer,) = thread_messages(world, task_id)
    edits = [r for r in world.emu.requests if r.method == "PATCH"
             and r.path == f"/channels/{task_id}/messages/{answer['id']}"]
    assert edits and edits[-1].body["content"] == answer["content"]
    assert answer["edited_timestamp"] and "attempt 1/3" in answer["content"]
    assert answer["content"].startswith("🏁 **succeeded** in ")
    assert answer["content"].rstrip().endswith("\ndone: Write a haiku about queues")

    task_msg = world.messages("task-queue")[0]
    # the thread shows the claim, its name how the task ended: no reactions needed
    assert not reactions(task_msg) and task_msg["thread"]["name"].startswith("🏁 task ")
    assert task_msg["thread"]["thread_metadata"]["archived"] is True

    summaries = world.summaries()
    assert len(summaries) == 1
    assert summaries[0].startswith("🏁 **succeeded** · https://discord.com/channels/")
    assert summaries[0].split(" · ")[1].endswith(f"/{task_id}")

    board = eventually(lambda: world.messages("worker-pool"), 30, "the worker board")
    assert len(board) == 1 and "**" in board[0]["content"]

    # what one task cost, by endpoint (the report quotes these)
    per_route = Counter(r.route for r in world.emu.requests[start:] if r.bot != "submitter")
    print("\nrequests by the worker for one task:", dict(per_route))
    assert per_route["POST /channels/{channel_id}/messages/{message_id}/threads"] == 1
