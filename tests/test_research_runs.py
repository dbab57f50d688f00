"""Kept research runs: saved, listed, loaded, renamed, deleted and compared on a real SQLite file."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.clock import session_bounds
from core.feed import MarketFeed
from core.research.runs import (
    bars_fingerprint,
    compare_runs,
    delete_run,
    feed_fingerprint,
    list_runs,
    load_run,
    rename_run,
    run_equity_csv,
    run_json,
    run_trades_csv,
    save_run,
)
from core.state.store import Store
from core.venues.sim.bar_files import ReplayMarket, validate_bars
from tests.helpers import ScriptedStrategy

T0 = datetime(2025, 3, 3, 21, 5, tzinfo=UTC)


def strict_json(text: str) -> object:
    """Standard JSON only: NaN / Infinity literals fail here."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def equity_frame(start: float = 100_000.0, n: int = 5) -> pd.DataFrame:
    ts = pd.date_range("2025-03-03 14:31", periods=n, freq="1min", tz="UTC").as_unit("ns")
    return pd.DataFrame({"ts": ts, "equity": start + np.arange(n) * 12.5})


def trades_frame() -> pd.DataFrame:
    return pd.DataFrame([
        {"id": 1, "symbol": "NVDA", "qty": 3.5, "entry_ts": "2025-03-03T14:40:00+00:00", "entry_price": 120.25,
         "exit_ts": "2025-03-03T15:10:00+00:00", "exit_price": 123.0, "pnl": 9.625, "exit_reason": "take_profit"},
        {"id": 2, "symbol": "TSLA", "qty": 2.0, "entry_ts": "2025-03-03T16:00:00+00:00", "entry_price": 250.0,
         "exit_ts": "2025-03-03T16:30:00+00:00", "exit_price": 245.5, "pnl": -9.0, "exit_reason": "stop_loss"},
    ])


def sample(**over: object) -> dict:
    kw: dict = {
        "name": "baseline", "kind": "replay", "created_at": T0,
        "source": {"kind": "synthetic", "seed": 7, "first": "2025-03-03", "last": "2025-03-07",
                   "symbols": ["NVDA", "TSLA"], "fingerprint": "0123456789abcdef"},
        "params": {"cutoff_delta": 0.02, "mixer_cooldown_s": 120, "tiers": {"A": ["NVDA"], "B": ["TSLA"]}},
        "metrics": {"total_return": 0.0123, "sharpe": 1.5, "max_drawdown": 0.02, "trades": 2, "win_rate": 0.5},
        "equity": equity_frame(), "trades": trades_frame(),
        "benchmark": {"equal_weight": {"label": "Buy & hold, equal weight (2 symbols)",
                                       "metrics": {"total_return": 0.01}, "curve": equity_frame(100_000.0, 3)}},
        "detail": {"note": "first try"},
    }
    kw.update(over)
    return kw


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "app.db")
    yield s
    s.close()


def test_save_list_load_round_trip(store):
    rid = save_run(store, **sample())
    listed = list_runs(store)
    assert listed["id"].tolist() == [rid]
    row = listed.iloc[0]
    assert (row["name"], row["kind"], row["source"], row["first"], row["last"]) == \
        ("baseline", "replay", "synthetic seed 7", "2025-03-03", "2025-03-07")
    assert (row["total_return"], row["sharpe"], row["max_drawdown"], row["trades"]) == (0.0123, 1.5, 0.02, 2)
    assert row["fingerprint"] == "0123456789abcdef"

    run = load_run(store, rid)
    want = sample()
    assert run["id"] == rid and run["created_at"] == T0 and run["name"] == "baseline" and run["kind"] == "replay"
    for part in ("source", "params", "metrics", "detail"):
        assert run[part] == want[part], part
    pd.testing.assert_frame_equal(run["equity"], want["equity"])
    pd.testing.assert_frame_equal(run["trades"], want["trades"], check_dtype=False)
    bench = run["benchmark"]["equal_weight"]
    assert bench["label"] == want["benchmark"]["equal_weight"]["label"]
    pd.testing.assert_frame_equal(bench["curve"], want["benchmark"]["equal_weight"]["curve"])


def test_list_is_newest_first_and_names_each_source(store):
    a = save_run(store, **sample(name="old", created_at=T0))
    b = save_run(store, **sample(name="new file", created_at=T0 + timedelta(hours=2),
                                 source={"kind": "file", "file": "/data/in/bars.csv", "first": "2025-03-04",
                                         "last": "2025-03-04"}))
    c = save_run(store, **sample(name="middle", created_at=T0 + timedelta(hours=1),
                                 source={"kind": "alpaca", "feed": "iex"}, metrics={"sharpe": 0.3}))
    listed = list_runs(store)
    assert listed["id"].tolist() == [b, c, a]
    assert listed["source"].tolist() == ["file bars.csv", "alpaca iex", "synthetic seed 7"]
    mid = listed.set_index("id").loc[c]
    assert mid["sharpe"] == 0.3 and pd.isna(mid["total_return"]) and pd.isna(mid["first"])  # absent, not made up


def test_equity_and_trades_as_lists_are_accepted(store):
    pairs = [[datetime(2025, 3, 3, 14, 31, tzinfo=UTC), 100.0], ["2025-03-03T14:32:00+00:00", 101.5]]
    rid = save_run(store, **sample(equity=pairs, trades=trades_frame().to_dict(orient="records")))
    run = load_run(store, rid)
    assert run["equity"]["equity"].tolist() == [100.0, 101.5]
    assert list(run["equity"]["ts"]) == [pd.Timestamp("2025-03-03 14:31", tz="UTC"),
                                         pd.Timestamp("2025-03-03 14:32", tz="UTC")]
    assert run["trades"]["pnl"].tolist() == [9.625, -9.0]
    empty = load_run(store, save_run(store, **sample(equity=None, trades=None)))
    assert empty["equity"].empty and list(empty["equity"].columns) == ["ts", "equity"] and empty["trades"].empty


def test_rename_and_delete(store):
    rid = save_run(store, **sample())
    other = save_run(store, **sample(name="other"))
    rename_run(store, rid, "  tighter cutoff ")
    assert load_run(store, rid)["name"] == "tighter cutoff"
    with pytest.raises(ValueError, match="empty"):
        rename_run(store, rid, "   ")
    assert load_run(store, rid)["name"] == "tighter cutoff"
    with pytest.raises(KeyError, match="999"):
        rename_run(store, 999, "x")
    assert delete_run(store, rid) is True
    assert delete_run(store, rid) is False  # already gone (another window deleted it)
    assert list_runs(store)["id"].tolist() == [other]
    with pytest.raises(KeyError, match=f"id {rid}"):
        load_run(store, rid)


def test_unknown_id_is_a_clear_key_error(store):
    with pytest.raises(KeyError, match="no saved research run with id 42"):
        load_run(store, 42)


def test_names_kinds_and_times_are_validated(store):
    for bad in ("", "   ", "\t\n"):
        with pytest.raises(ValueError, match="empty"):
            save_run(store, **sample(name=bad))
    with pytest.raises(ValueError, match="81 characters"):
        save_run(store, **sample(name="x" * 81))
    with pytest.raises(ValueError, match="'backtest' is not one of replay, sweep, walk_forward"):
        save_run(store, **sample(kind="backtest"))
    with pytest.raises(ValueError, match="timezone-aware"):
        save_run(store, **sample(created_at=datetime(2025, 3, 3, 21, 5)))
    assert list_runs(store).empty  # nothing half-saved
    rid = save_run(store, **sample(name="  " + "y" * 80 + "  ", kind="walk_forward"))
    assert load_run(store, rid)["name"] == "y" * 80


def test_nan_and_infinity_are_stored_as_null(store):
    eq = equity_frame()
    eq.loc[2, "equity"] = np.nan
    rid = save_run(store, **sample(
        metrics={"sharpe": float("nan"), "profit_factor": float("inf"), "sortino": np.float64(-np.inf),
                 "trades": np.int64(3)},
        equity=eq, detail={"grid": [{"cutoff_delta": 0.01, "sharpe": float("nan")}]}))
    raw = store.one("SELECT * FROM research_runs WHERE id=?", (rid,))
    for part in ("metrics", "equity", "detail", "trades", "benchmark", "source", "params"):
        strict_json(raw[part])  # standard JSON: no NaN / Infinity literals
    assert strict_json(raw["metrics"]) == {"sharpe": None, "profit_factor": None, "sortino": None, "trades": 3}
    assert strict_json(raw["equity"])[2][1] is None
    assert strict_json(raw["detail"]) == {"grid": [{"cutoff_delta": 0.01, "sharpe": None}]}


def test_the_table_is_added_to_an_existing_database_that_lacks_it(tmp_path):
    db = tmp_path / "old.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE research_runs")
    con.commit()
    con.close()
    ro = Store(db, readonly=True)  # a page's read connection on the old file: no runs, no error
    assert list_runs(ro).empty and "name" in list_runs(ro).columns
    with pytest.raises(KeyError):
        load_run(ro, 1)
    ro.close()
    s = Store(db)  # the app starts on the old file
    rid = save_run(s, **sample())
    assert load_run(s, rid)["name"] == "baseline"
    s.close()


def test_a_read_only_store_refuses_to_save(tmp_path):
    db = tmp_path / "app.db"
    Store(db).close()
    ro = Store(db, readonly=True)
    with pytest.raises(PermissionError, match="read-only"):
        save_run(ro, **sample())
    ro.close()


def test_runs_survive_an_app_restart_and_are_committed_at_once(tmp_path):
    db = tmp_path / "app.db"
    s = Store(db)
    s.batched = True  # even a store in a replay's batch mode commits a kept run now
    with s.tick_scope():
        rid = save_run(s, **sample())
    other = sqlite3.connect(db)  # another process's view, while the saving store is still open
    assert other.execute("SELECT name FROM research_runs WHERE id=?", (rid,)).fetchone() == ("baseline",)
    other.close()
    before = load_run(s, rid)
    s.close()
    again = Store(db)
    after = load_run(again, rid)
    pd.testing.assert_frame_equal(after["equity"], before["equity"])
    pd.testing.assert_frame_equal(after["trades"], before["trades"])
    assert {k: v for k, v in after.items() if k not in ("equity", "trades", "benchmark")} == \
        {k: v for k, v in before.items() if k not in ("equity", "trades", "benchmark")}
    again.close()


def test_compare_runs_deltas(store):
    a = load_run(store, save_run(store, **sample(
        name="base", metrics={"total_return": 0.1, "sharpe": 1.2, "trades": 10, "win_rate": None, "note": "x"})))
    b = load_run(store, save_run(store, **sample(
        name="tight", metrics={"total_return": 0.25, "sharpe": 0.7, "trades": 14, "max_drawdown": 0.05})))
    table = compare_runs(a, b)
    assert list(table.columns) == ["metric", "base", "tight", "delta"]
    got = dict(zip(table["metric"], table["delta"], strict=True))
    assert table["metric"].tolist() == ["total_return", "sharpe", "trades", "win_rate", "note", "max_drawdown"]
    assert got["total_return"] == pytest.approx(0.25 - 0.1)
    assert got["sharpe"] == pytest.approx(0.7 - 1.2)
    assert got["trades"] == 14 - 10
    assert got["win_rate"] is None and got["note"] is None and got["max_drawdown"] is None  # missing / not a number
    picked = compare_runs(a, b, ["sharpe", "cagr"])
    assert picked["metric"].tolist() == ["sharpe", "cagr"] and picked["delta"].iloc[1] is None
    assert picked["base"].tolist() == [1.2, None]
    same = compare_runs(a, {**b, "name": "base"})
    assert list(same.columns) == ["metric", f"base (#{a['id']})", f"base (#{b['id']})", "delta"]


def test_downloads_are_standard_json_and_csv(store):
    run = load_run(store, save_run(store, **sample(metrics={"sharpe": float("inf"), "trades": 2})))
    doc = strict_json(run_json(run))
    assert doc["name"] == "baseline" and doc["metrics"] == {"sharpe": None, "trades": 2}
    assert doc["created_at"] == T0.isoformat()
    eq = equity_frame()
    assert doc["equity"] == [[t.isoformat(), v] for t, v in zip(eq["ts"], eq["equity"], strict=True)]
    assert doc["trades"] == trades_frame().to_dict(orient="records")
    assert len(doc["benchmark"]["equal_weight"]["curve"]) == 3
    trades = pd.read_csv(io.BytesIO(run_trades_csv(run)))
    # each time in UTC as saved, followed by the same moment in New York time (the zone of the page's chart)
    pd.testing.assert_frame_equal(trades.drop(columns=["entry_ts_ny", "exit_ts_ny"]), trades_frame(),
                                  check_dtype=False)
    assert list(trades.columns[4:7]) == ["entry_ts_ny", "entry_price", "exit_ts"]
    assert trades["entry_ts_ny"].tolist() == ["2025-03-03T09:40:00-05:00", "2025-03-03T11:00:00-05:00"]
    assert trades["exit_ts_ny"].tolist() == ["2025-03-03T10:10:00-05:00", "2025-03-03T11:30:00-05:00"]
    curve = pd.read_csv(io.BytesIO(run_equity_csv(run)))
    assert list(curve.columns) == ["ts", "ts_ny", "equity"] and curve["equity"].tolist() == eq["equity"].tolist()
    assert list(pd.to_datetime(curve["ts"], utc=True)) == list(eq["ts"])
    assert list(pd.to_datetime(curve["ts_ny"], utc=True)) == list(eq["ts"])  # the same moments
    assert curve["ts_ny"].iloc[0] == "2025-03-03T09:31:00-05:00"  # 14:31 UTC, as the chart's axis reads
    assert run_trades_csv({**run, "trades": pd.DataFrame()}) == b""


# ------------------------------------------------------------------ fingerprints
def test_bars_fingerprint_is_stable_and_moves_with_one_bar():
    rng = np.random.default_rng(5)
    ts = np.arange(1_740_000_000, 1_740_000_000 + 60 * 50, 60, dtype=np.int64)
    close = rng.uniform(10, 20, (50, 3))
    close[4, 1] = np.nan  # a missing bar
    fp = bars_fingerprint(ts, close)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert bars_fingerprint(ts.copy(), close.copy()) == fp  # equal data, NaN included
    changed = close.copy()
    changed[30, 2] += 0.01
    assert bars_fingerprint(ts, changed) != fp
    shifted = ts.copy()
    shifted[-1] += 60
    assert bars_fingerprint(shifted, close) != fp
    assert bars_fingerprint(ts, close.reshape(50, 3).T.copy().T) == fp  # same values, another memory layout


def _feed(rows: list[dict], days: list[date]) -> MarketFeed:
    frame = pd.DataFrame(rows).sort_values(["timestamp", "symbol"])
    feed = MarketFeed(ReplayMarket(validate_bars(frame, "bars")), ScriptedStrategy(lambda s, t: 0.0), ("A", "B"))
    feed.preload_sessions(days)
    return feed


def _rows(edit: tuple[date, int, float] | None = None) -> list[dict]:
    rows = []
    for day in (date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5)):
        open_ = session_bounds(day)[0].astimezone(UTC)
        for m in range(4):
            for sym, p in (("A", 10.0 + m), ("B", 50.0 - m)):
                if edit is not None and sym == "A" and (day, m) == edit[:2]:
                    p = edit[2]
                rows.append({"timestamp": open_ + timedelta(minutes=m), "symbol": sym, "open": p, "high": p,
                             "low": p, "close": p, "volume": 100.0})
    return rows


def test_feed_fingerprint_over_the_run_sessions():
    d1, d2, d3 = date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5)
    fp = feed_fingerprint(_feed(_rows(), [d1, d2, d3]), d1, d2)
    assert feed_fingerprint(_feed(_rows(), [d1, d2, d3]), d1, d2) == fp
    assert feed_fingerprint(_feed(_rows((d2, 3, 99.0)), [d1, d2, d3]), d1, d2) != fp  # a bar of the run changed
    assert feed_fingerprint(_feed(_rows((d3, 1, 99.0)), [d1, d2, d3]), d1, d2) == fp  # a bar after its last session
    assert feed_fingerprint(_feed(_rows(), [d1, d2, d3]), d1, d3) != fp
    with pytest.raises(ValueError, match="2025-03-08 is not a trading session"):
        feed_fingerprint(_feed(_rows(), [d1]), d1, date(2025, 3, 8))


def test_a_deleted_runs_id_is_never_reused(tmp_path):
    from datetime import UTC, datetime

    from core.research import runs as r
    from core.state.store import Store

    store = Store(str(tmp_path / "ids.db"))
    when = datetime(2025, 3, 3, tzinfo=UTC)
    first = r.save_run(store, name="a", kind="replay", source={"kind": "synthetic", "seed": 1}, params={},
                       metrics={}, created_at=when)
    r.delete_run(store, first)
    second = r.save_run(store, name="b", kind="replay", source={"kind": "synthetic", "seed": 1}, params={},
                        metrics={}, created_at=when)
    assert second > first
    store.close()
