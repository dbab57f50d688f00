"""The parity contract of the compiled research kernel: a replay through ``core.research.fast`` (quiet ticks
compiled, the rest through ``Engine.tick``) writes exactly the tables a replay of every tick through ``Engine.tick``
writes. Shared by the parity tests (compiled, and with ``NUMBA_DISABLE_JIT=1`` in a child process)."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.golden_replays import tables  # noqa: E402

# four parameter sets: the defaults, loose gates and baskets, tight risk (every risk gate and the daily-loss halt),
# fees with tight brackets and few tokens (rate limits, stop-outs, the stop-loss guard)
SETS: dict[str, dict[str, Any]] = {
    "default": {"auto_mode": True},
    "loose": {"auto_mode": True, "cutoff_delta": -0.08, "mixer_cooldown_s": 60, "basket_mean_score": -0.04,
              "basket_neg_ratio": 0.5, "basket_min_signals": 2, "direction_lock_s": 240},
    "tight": {"auto_mode": True, "cutoff_delta": -0.1, "max_positions": 2, "risk_per_trade": 0.002,
              "max_concurrent_risk": 0.004, "daily_loss_limit": 0.002, "tier_a_daily_cap": 3, "rth_daily_cap": 8,
              "min_position_fraction": 0.6},
    "fees": {"auto_mode": True, "sim_fee_per_order": 1.25, "sim_slippage_bps": 5.0, "tier_a_tokens": 2,
             "reserve_tokens": 1, "stop_loss_pct": 0.004, "take_profit_pct": 0.006, "protection_stoploss_count": 2,
             "cutoff_delta": -0.05},
}
SEEDS = (1, 2, 3, 4, 5, 6)
START = date(2025, 3, 4)


def bar_file(folder: Path, seed: int) -> Path:
    """Three sessions of a seed's market as a CSV with holes: rows dropped at random and one stock missing for an
    hour (no-data decisions, stale prices, legs over missing bars)."""
    from core.venues.sim.synthetic import SyntheticMarket

    frame = SyntheticMarket(seed, anchor=date(2025, 3, 3)).frame_for_sessions(3)
    rng = np.random.default_rng(seed)
    keep = rng.random(len(frame)) > 0.02
    ts = frame["timestamp"]
    hole = (frame["symbol"] == "TSLA") & (ts >= ts.iloc[len(ts) // 2]) & (ts < ts.iloc[len(ts) // 2] +
                                                                           np.timedelta64(60, "m"))
    path = folder / f"bars_{seed}.csv"
    frame[keep & ~hole].to_csv(path, index=False)
    return path


def differing_tables(settings: dict[str, Any], *, seed: int, days: int, folder: Path, bars: Path | None = None,
                     decisions: str = "summary", stop_after_ticks: int | None = None) -> dict[str, tuple[int, int]]:
    """Replay both ways on one scored feed; the tables that differ, with their row counts (reference, kernel)."""
    from core.config import load_settings
    from core.research.replay import run_replay, shared_feed

    s = load_settings(**settings)
    feed = shared_feed(s, days=days, seed=seed, start=START, bars_file=bars)
    out = {}
    for path in ("reference", "kernel"):
        db = str(folder / f"{path}.db")
        Path(db).unlink(missing_ok=True)
        run_replay(s, days=days, seed=seed, start=START, db_path=db, feed=feed, decisions=decisions, path=path,
                   stop_after_ticks=stop_after_ticks).store.close()
        out[path] = tables(db)
    ref, ker = out["reference"], out["kernel"]
    assert sum(len(v) for v in ref.values()) > (100 if stop_after_ticks else 1000)  # something was replayed
    return {n: (len(ref.get(n, [])), len(ker.get(n, []))) for n in sorted(set(ref) | set(ker))
            if ref.get(n) != ker.get(n)}


if __name__ == "__main__":  # the child of the plain-Python test: python tests/kernel_parity.py SEED SET DAYS
    import tempfile

    seed, name, days = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        print(differing_tables(SETS[name], seed=seed, days=days, folder=Path(tmp)))
