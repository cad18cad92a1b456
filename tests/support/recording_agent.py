"""A stand-in agent CLI for worker tests: records every execution, then answers.

usage: recording_agent.py LOG
Reads the prompt on stdin and appends one JSON line {prompt, pid, attempt_marker} to LOG (O_APPEND,
so concurrent agents never interleave). Prompts steer it:
  SLOW       write LOG.started (our pid), then work for a long time (until killed)
  HANG-ONCE  like SLOW the first time (marker LOG.hung), answer at once afterwards
  FAIL       print to stderr and exit 3
  WORK=<s>   work S seconds before answering
otherwise print "done: <prompt>".
"""

import json
import os
import re
import sys
import time

log = sys.argv[1]
prompt = sys.stdin.read()
record = json.dumps({"prompt": prompt, "pid": os.getpid()}) + "\n"
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, record.encode())
os.close(fd)


def work_forever() -> None:
    with open(log + ".started", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(600)  # the agent's "work"; the test kills or cancels it


if "SLOW" in prompt:
    work_forever()
if "HANG-ONCE" in prompt:
    try:
        os.close(os.open(log + ".hung", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        work_forever()
    except FileExistsError:
        pass
work = re.search(r"WORK=([\d.]+)", prompt)
if work:
    time.sleep(float(work.group(1)))
if "FAIL" in prompt:
    print("agent exploded on purpose", file=sys.stderr)
    sys.exit(3)
print(f"done: {prompt}")
