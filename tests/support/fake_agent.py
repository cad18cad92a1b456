"""A stand-in agent CLI for the executor tests: one small behaviour per mode.

Usage: fake_agent.py MODE [ARGS...]. The prompt arrives on stdin. Modes that tests must wait for
write READY_FILE (from $FAKE_AGENT_READY, passed explicitly by tests) once they are set up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def ready() -> None:
    path = os.environ.get("FAKE_AGENT_READY")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "echo":  # the answer is the prompt
        sys.stdout.buffer.write(sys.stdin.buffer.read())
        return 0
    if mode == "count":  # the answer is the prompt's length in bytes
        print(len(sys.stdin.buffer.read()))
        return 0
    if mode == "sleep":  # run until killed
        ready()
        time.sleep(float(args[0]) if args else 600)
        return 0
    if mode == "ignore-term":  # note SIGTERM in a file, keep running
        note = args[0]

        def on_term(signum: int, frame: object) -> None:
            with open(note, "a") as f:
                f.write("term\n")

        signal.signal(signal.SIGTERM, on_term)
        ready()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return 0
    if mode == "grandchild":  # start a grandchild in our group, record its pid, then exit/wait
        pidfile, then = args[0], args[1]
        code = (
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if "stubborn" in args else ""
        ) + "import time\ntime.sleep(600)\n"
        child = subprocess.Popen([sys.executable, "-c", code])
        with open(pidfile, "w") as f:
            f.write(str(child.pid))
        if then == "exit":
            print("parent done")
            return 0
        ready()
        time.sleep(600)
        return 0
    if mode == "big":  # N MiB of numbered lines on stdout
        total = int(args[0]) * 1024 * 1024
        line = b"x" * 1023 + b"\n"
        out = sys.stdout.buffer
        for _ in range(total // len(line)):
            out.write(line)
        out.write(b"END\n")
        return 0
    if mode == "binary":  # not UTF-8 on stdout and stderr
        sys.stdout.buffer.write(b"ok \xff\xfe bad \xc3\x28 end\n")
        sys.stderr.buffer.write(b"err \xff\n")
        return 0
    if mode == "noread":  # never reads stdin
        print("done without reading")
        return 0
    if mode == "env":  # the environment as JSON
        print(json.dumps(dict(os.environ)))
        return 0
    if mode == "argv":  # record argv and cwd, answer with the prompt
        with open(args[0], "w") as f:
            json.dump({"argv": sys.argv[3:], "cwd": os.getcwd()}, f)
        sys.stdout.write("answer: " + sys.stdin.read())
        return 0
    if mode == "fail":  # a message on stderr and an exit code
        sys.stdout.write("partial output\n")
        sys.stderr.write("noise\n" * 2000 + args[1] + "\n")
        return int(args[0])
    print(f"unknown mode {mode}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
