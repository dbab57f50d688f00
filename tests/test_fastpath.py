"""Replay fast path vs reference (every tick through Engine.tick): the same database, table by table."""

from __future__ import annotations

from datetime import date

import pytest

from core.config import load_settings
from core.research.replay import run_replay

TABLES = {"signals": "id", "signal_counts": "symbol, minute, decision, reason",
          "intents": "id", "orders": "client_order_id", "fills": "id", "trades": "id",
          "equity": "ts", "basket_state": "name", "token_stats": "minute, tier", "kv": "key", "positions": "symbol",
          "day_state": "date", "counters": "key", "sim_orders": "id", "sim_fills": "seq", "sim_positions": "symbol",
          "sim_account": "id", "notifications": "id", "protections": "id", "param_audit": "id"}
PARAMS = [
    {},
    {"cutoff_delta": -0.05, "mixer_cooldown_s": 60},
    {"cutoff_delta": 0.04, "mixer_cooldown_s": 300, "direction_lock_s": 300, "max_positions": 2},
    # tight equity guards: the daily-loss halt and the stop-loss guard fire inside quiet stretches too
    {"cutoff_delta": -0.05, "daily_loss_limit": 0.002, "protection_stoploss_count": 2},
]


def dump(store) -> dict:  # noqa: ANN001
    out = {t: store.query(f"SELECT * FROM {t} ORDER BY {k}") for t, k in TABLES.items()}
    out["meta"] = {r["key"]: r["value"] for r in store.query("SELECT key, value FROM meta")}
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("params", range(len(PARAMS)))
def test_fast_and_reference_modes_write_the_same_database(seed, params):
    """Every decision as a full row: the fast path's decision log equals the engine's, row for row."""
    s = load_settings(auto_mode=True, **PARAMS[params])
    ref = run_replay(s, days=2, seed=seed, start=date(2025, 3, 3), mode="reference", decisions="full")
    fast = run_replay(s, days=2, seed=seed, start=date(2025, 3, 3), mode="fast", decisions="full")
    a, b = dump(ref.store), dump(fast.store)
    for table in a:
        assert a[table] == b[table], table
    sa, sb = dict(ref.stats), dict(fast.stats)
    sa.pop("elapsed_s"), sb.pop("elapsed_s")
    assert sa == sb
    assert sa["trades"] > 0 and len(a["signals"]) > 1000  # something happened to compare


@pytest.mark.parametrize("params", range(len(PARAMS)))
def test_fast_and_reference_modes_write_the_same_summary_log(params):
    """The summary form (the research default): the same kept rows and the same per-minute counts."""
    s = load_settings(auto_mode=True, **PARAMS[params])
    ref = run_replay(s, days=2, seed=2, start=date(2025, 3, 3), mode="reference", decisions="summary")
    fast = run_replay(s, days=2, seed=2, start=date(2025, 3, 3), mode="fast", decisions="summary")
    a, b = dump(ref.store), dump(fast.store)
    for table in a:
        assert a[table] == b[table], table
    sa, sb = dict(ref.stats), dict(fast.stats)
    sa.pop("elapsed_s"), sb.pop("elapsed_s")
    assert sa == sb
    assert sa["trades"] > 0 and len(a["signal_counts"]) > 1000 and a["signals"]


def test_manual_mode_and_restart_resume_match_too(tmp_path):
    s = load_settings(auto_mode=False)
    ref = run_replay(s, days=1, seed=6, start=date(2025, 3, 3), mode="reference", decisions="full")
    fast = run_replay(s, days=1, seed=6, start=date(2025, 3, 3), mode="fast", decisions="full")
    assert dump(ref.store) == dump(fast.store)
    # a fast run stopped mid-day and resumed equals the uninterrupted reference
    s = load_settings(auto_mode=True)
    whole = run_replay(s, days=2, seed=8, start=date(2025, 3, 3), mode="reference")
    db = str(tmp_path / "resume.db")
    first = run_replay(s, days=2, seed=8, start=date(2025, 3, 3), db_path=db, stop_after_ticks=500, mode="fast")
    first.store.close()
    second = run_replay(s, days=2, seed=8, start=date(2025, 3, 3), db_path=db, mode="fast")
    for key in ("orders", "fills", "trades", "pnl", "signals", "suppressed"):
        assert second.stats[key] == whole.stats[key], key


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        run_replay(load_settings(), days=1, seed=1, start=date(2025, 3, 3), mode="turbo")


def test_chunked_wide_preload_equals_scoring_the_long_bars_at_once():
    """preload_sessions builds wide arrays chunk by chunk and scores once with score_wide; every array must
    equal the one-call load() that goes through score_bars on the long format."""
    from datetime import datetime, timedelta

    import numpy as np

    from core.clock import NY, UTC, session_bounds
    from core.engine import Engine
    from core.research.replay import build_market, replay_days
    from core.state.store import Store

    s = load_settings()
    feeds = []
    for chunked in (False, True):
        market = build_market(s, seed=3, start=date(2025, 1, 2), bars_file=None, days=12)
        engine = Engine(s, Store(":memory:"), market)
        days = replay_days(s, date(2025, 1, 2), 12, market)
        if chunked:
            engine.feed.preload_sessions(days, chunk_sessions=5)
        else:
            start = session_bounds(days[0])[0].astimezone(UTC) - timedelta(days=5)
            end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
            engine.feed.load(start, end)
        feeds.append(engine.feed)
    whole, chunked = feeds
    for name in ("ts", "open", "high", "low", "close", "volume", "score", "vol_spike"):
        a, b = getattr(whole, name), getattr(chunked, name)
        assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True), name
    assert np.isfinite(chunked.score).sum() > 10_000
    assert whole._raw_tail.equals(chunked._raw_tail)
