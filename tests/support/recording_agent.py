"""A stand-in agent CLI for worker tests: records every execution, then answers.

usage: recording_agent.py LOG
Reads the prompt on stdin and appends one JSON line {prompt, sha256 (of the bytes read), pid} to
LOG (O_APPEND, so concurrent agents never interleave). Prompts steer it:
  SLOW       write LOG.started (our pid), then work for a long time (until killed)
  HANG-ONCE  like SLOW the first time (marker LOG.hung), answer at once afterwards
  FAIL       print to stderr and exit 3
  WORK=<s>   work S seconds before answering
  ANSWER_BYTES=<n>  answer about N bytes of numbered UTF-8 lines, also written to LOG.answer
otherwise print "done: <prompt>".
"""

import hashlib
import json
import os
import re
import sys
import time

log = sys.argv[1]
raw = sys.stdin.buffer.read()
prompt = raw.decode("utf-8", "surrogateescape")
record = json.dumps({"prompt": prompt, "sha256": hashlib.sha256(raw).hexdigest(),
                     "pid": os.getpid()}) + "\n"
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
big = re.search(r"ANSWER_BYTES=(\d+)", prompt)
if big:
    lines, size, n = [], 0, 0
    while size < int(big.group(1)):
        line = f"{n:07d} · ünïcödé answer line, `a[i:j]` <@123> @everyone\n".encode()
        lines.append(line)
        size, n = size + len(line), n + 1
    answer = b"".join(lines)
    with open(log + ".answer", "wb") as f:
        f.write(answer)
    sys.stdout.buffer.write(answer)
    sys.exit(0)
print(f"done: {prompt}")
