"""A stand-in agent that leaks every secret it can get at, the way a prompt-injected one would.

usage: leaking_agent.py  (the prompt, on stdin: one variable name per line, `STOLEN:<text>`, or
`PAD:<n>` to print N bytes of filler first, so that the answer goes as a file on Discord, or
`OK` to exit 0 instead of 3)
For each variable named, and for each STOLEN text reversed (a bot token the agent found: the
test keeps the plain value out of the prompt), prints LABEL=<value> on stdout and on stderr, then
folded over two lines, base64-encoded and URL-encoded. Writes proof.json in its working directory
(the sha256 of each variable's value, the names of its environment), ends stderr with the first
20 characters of the first value (a cut), and exits 3 (unless OK): the task fails with the whole
leak in its output, error and stderr tail.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.parse

values = {}
code = 3
for line in sys.stdin.read().split():
    if line == "OK":
        code = 0
    elif line.startswith("PAD:"):
        print(("filler " * 10 + "\n") * (int(line.removeprefix("PAD:")) // 71 + 1))
    elif line.startswith("STOLEN:"):
        values["stolen"] = line.removeprefix("STOLEN:")[::-1]
    else:
        values[line] = os.environ.get(line, "")
for label, value in values.items():
    half = len(value) // 2
    for stream in (sys.stdout, sys.stderr):
        print(f"{label}={value}", file=stream)
        print(f"folded: {value[:half]}\n{value[half:]}", file=stream)
        print("base64: " + base64.b64encode(value.encode()).decode(), file=stream)
        print("url: " + urllib.parse.quote(value, safe=""), file=stream)
with open("proof.json", "w", encoding="utf-8") as f:
    json.dump({"sha256": {n: hashlib.sha256(v.encode()).hexdigest()
                          for n, v in values.items() if n != "stolen"},
               "environment": sorted(os.environ)}, f)
print("cut here: " + next(iter(values.values()), "")[:20], file=sys.stderr, end="")
sys.exit(code)
