"""Run the whole suite with the system date moved (``make test-dates``): no test may depend on the day it runs.

Each run preloads libfaketime (built by the ``libfaketime`` package from PyPI, a newer libfaketime than
Debian's 0.9.10, whose ``clock_nanosleep`` fails with EINVAL when the monotonic clock is left alone) with
``FAKETIME="@<date time>"``: the wall clock starts at that moment and runs on. The monotonic clock is not
moved (``FAKETIME_DONT_FAKE_MONOTONIC=1``): timeouts and sleeps measure durations, not dates, and Python's
timed waits hang when it is moved. Child processes (the app, workers, redis-server, Chromium) inherit it.

    python tests/run_on_dates.py                      # the default days below
    python tests/run_on_dates.py "2027-03-15 13:45:00" -- -k replay
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, UTC wall time the clock starts at)
DAYS = [
    ("Saturday", "2026-11-28 15:00:00"),
    ("early close (day after Thanksgiving), after the 13:00 close", "2026-11-27 19:30:00"),
    ("Monday after the DST switch, in the session", "2027-03-15 14:00:00"),
    ("holiday observed (Independence Day)", "2027-07-05 16:00:00"),
    ("New Year's Eve, late evening New York", "2027-12-31 04:30:00"),
    ("normal Tuesday, before the open", "2027-02-09 12:00:00"),
]


def faketime_library() -> str:
    import libfaketime  # the PyPI package ships the compiled library

    lib = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    if not lib.exists():
        raise SystemExit(f"libfaketime library not found at {lib}")
    return str(lib)


def run_on(when: str, pytest_args: list[str]) -> tuple[int, str, float]:
    env = {**os.environ, "LD_PRELOAD": faketime_library(), "FAKETIME": f"@{when}",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1", "CI": os.environ.get("CI", "true")}
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider",
           *pytest_args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    summary = next((ln.strip("= ") for ln in reversed(out.splitlines())
                    if re.search(r"\d+ (passed|failed|error)", ln)), "no summary")
    if proc.returncode != 0:
        sys.stdout.write(out[-6000:])
    return proc.returncode, summary, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("when", nargs="*", help="UTC wall times 'YYYY-MM-DD HH:MM:SS' (default: the days listed here)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # after "--": pytest's own arguments, passed as they are
    args, rest = ap.parse_args(argv[:cut]), argv[cut + 1:]
    days = [(w, w) for w in args.when] or DAYS
    failed = 0
    for label, when in days:
        rc, summary, took = run_on(when, rest)
        failed += rc != 0
        # the date the suite saw, as the moved clock reports it
        print(f"{when} UTC ({label}): {summary} [exit {rc}, {took:.0f} s]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
