"""Every test runs in CI: `make test` and `make soak` together select every collected test, none
twice. Usage (the Makefile's `check-selection`): python tests/support/check_selection.py FAST SOAK
with the two -m expressions; exits 1 naming the tests left out or selected twice."""

from __future__ import annotations

import subprocess
import sys


def collect(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *args], capture_output=True, text=True, check=False)
    if done.returncode not in (0, 5):  # 5: nothing selected
        sys.exit(f"pytest could not collect the tests:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {line for line in done.stdout.splitlines() if "::" in line}


def main(fast: str, soak: str) -> int:
    every, quick, slow = collect(), collect("-m", fast), collect("-m", soak)
    left_out, twice = every - quick - slow, quick & slow
    for what, tests in (("in neither `make test` nor `make soak`", left_out),
                        ("in both `make test` and `make soak`", twice)):
        if tests:
            print(f"{len(tests)} test(s) {what}; fix the -m expressions in the Makefile or the "
                  "markers:", *sorted(tests)[:20], sep="\n  ", file=sys.stderr)
    if left_out or twice:
        return 1
    print(f"test selection: {len(quick)} in make test + {len(slow)} in make soak = {len(every)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
