"""Sweep benchmark (issues 5 and 18): an N x N grid (cutoff delta x cooldown) over S sessions of the synthetic
market, in 1 and 2 local worker processes and, with ``--cluster``, on a Dask cluster; prints cells/s of each and
the ratio to one process, and checks that every way gives the same rows.

The issue's shape is a 10 x 10 grid over three months (``--grid 10 --sessions 63``): on this project's 2-core
machine one cell of 63 sessions takes about 15 s of CPU, so that is about 25 min per way measured. The defaults
(5 x 5 over 5 sessions) finish in about two minutes for the three ways.

    .venv/bin/python bench/sweep_bench.py                               # 1 and 2 local processes
    .venv/bin/python bench/sweep_bench.py --cluster tcp://10.0.0.5:8786  # ... and that cluster
    .venv/bin/python bench/sweep_bench.py --cluster local:2             # ... and a Dask cluster of 2 workers here
    .venv/bin/python bench/sweep_bench.py --grid 10 --sessions 63       # the issue's shape

Last line: ``cells=<n> <way>_cells_per_s=<float> ... <way>_ratio=<float> ...`` (ratio: cells/s over 1 process's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.research.replay import run_sweep  # noqa: E402


def grid_of(n: int) -> dict[str, list[Any]]:
    """n cutoff deltas from -0.04 to +0.04 and n cooldowns from 60 s to 600 s (evenly spaced)."""
    if n < 1:
        raise SystemExit(f"--grid {n}: need at least 1")
    deltas = [round(-0.04 + 0.08 * i / (n - 1), 4) if n > 1 else 0.0 for i in range(n)]
    cools = [int(round(60 + 540 * i / (n - 1))) if n > 1 else 180 for i in range(n)]
    return {"cutoff_delta": deltas, "mixer_cooldown_s": cools}


def local_cluster(spec: str) -> tuple[Any, str]:
    """``local:N``: a Dask cluster of N single-thread worker processes on 127.0.0.1, started here."""
    from distributed import LocalCluster

    n = int(spec.split(":", 1)[1] or 2)
    lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    return lc, lc.scheduler_address


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=5, help="N for an N x N grid (default 5; the issue's shape: 10)")
    ap.add_argument("--sessions", type=int, default=5, help="sessions replayed per cell (default 5; 3 months: 63)")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2025, 3, 3))
    ap.add_argument("--processes", default="1,2", help="local process counts to measure (default 1,2)")
    ap.add_argument("--cluster", metavar="tcp://HOST:PORT|local:N", help="also run on this Dask scheduler")
    args = ap.parse_args()
    grid = grid_of(args.grid)
    cells = args.grid * args.grid
    ways: list[tuple[str, dict[str, Any]]] = [(f"{int(p)}p", {"workers": int(p)}) for p in args.processes.split(",")]
    owned = None
    if args.cluster:
        address = args.cluster
        if address.startswith("local"):
            owned, address = local_cluster(address if ":" in address else "local:2")
        ways.append(("cluster", {"cluster": address}))
    print(f"{args.grid} x {args.grid} grid ({cells} cells), {args.sessions} sessions from {args.start}, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    rates: dict[str, float] = {}
    first_rows = None
    try:
        for name, kw in ways:
            t0 = time.perf_counter()
            rows = run_sweep({"auto_mode": True}, grid, days=args.sessions, seed=7, start=args.start, **kw)
            wall = time.perf_counter() - t0
            rates[name] = len(rows) / wall
            same = "" if first_rows is None else (", same rows" if list(rows) == first_rows else ", ROWS DIFFER")
            first_rows = first_rows if first_rows is not None else list(rows)
            print(f"{name:>8}: {wall:7.1f} s, {rates[name]:.3f} cells/s ({rows.where}){same}")
    finally:
        if owned is not None:
            owned.close()
    base = rates.get("1p")
    best = max(first_rows or [{}], key=lambda r: r.get("total_return", float("-inf")))
    print(f"best: cutoff_delta={best.get('cutoff_delta')} cooldown={best.get('mixer_cooldown_s')} "
          f"total_return={best.get('total_return')}")
    ratios = " ".join(f"{n}_ratio={r / base:.2f}" for n, r in rates.items() if base) if base else ""
    print(f"cells={cells} " + " ".join(f"{n}_cells_per_s={r:.3f}" for n, r in rates.items()) + f" {ratios}".rstrip())


if __name__ == "__main__":
    main()
