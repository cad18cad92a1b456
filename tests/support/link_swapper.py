"""An attacker in the queue's group: keeps swapping symbolic links in for files of the queue.

    link_swapper.py DIRECTORY TARGET STOPFILE MODE NAME...

Becomes ``DORCH_TEST_AS`` (UID:GID:GROUP), prints ``ready``, then, until STOPFILE exists (at most
a fixed number of rounds), points each NAME in DIRECTORY at TARGET with a fresh link renamed
into place. MODE ``replace``: only over a regular file the victim has just made (so it goes on
using a name that now leads elsewhere); ``both``: also where nothing is, every other round.
Errors (a sticky directory refusing) are the point, so they are ignored. Prints how many links
it placed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys

ROUNDS = 200_000


def main(directory: str, target: str, stopfile: str, mode: str, names: list[str]) -> None:
    uid, gid, group = (int(x) for x in os.environ["DORCH_TEST_AS"].split(":"))
    os.setgroups([group])
    os.setgid(gid)
    os.setuid(uid)
    print("ready", flush=True)
    placed = 0
    tmp = os.path.join(directory, f".swap-{os.getpid()}")
    for rounds in range(ROUNDS):
        if rounds % 64 == 0 and os.path.exists(stopfile):
            break
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or (mode == "replace" and not stat.S_ISREG(st.st_mode)):
                    continue
            except FileNotFoundError:
                if mode == "replace" or rounds % 2:
                    continue
            try:
                os.symlink(target, tmp)
                os.rename(tmp, path)
                placed += 1
            except OSError:
                pass
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    print(placed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
