"""Sweep benchmark (issue 5): a 5 x 5 grid (cutoff delta x cooldown) over one month, 2 processes.

Last line: `sweep_s=<float> runs=25`.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import date

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.research.replay import run_sweep  # noqa: E402


def main() -> None:
    grid = {"cutoff_delta": [-0.04, -0.02, 0.0, 0.02, 0.04], "mixer_cooldown_s": [60, 120, 180, 300, 600]}
    t0 = time.perf_counter()
    rows = run_sweep({"auto_mode": True}, grid, days=21, seed=7, start=date(2025, 3, 3), workers=2)
    wall = time.perf_counter() - t0
    best = max(rows, key=lambda r: r["total_return"])
    print(f"best: cutoff_delta={best['cutoff_delta']} cooldown={best['mixer_cooldown_s']} "
          f"total_return={best['total_return']:.4f} trades={best['trades']}")
    print(f"sweep_s={wall:.2f} runs={len(rows)}")


if __name__ == "__main__":
    main()
