"""The decision log's two forms (core.state.decisions): a replay stored in the summary form gives every reader the same
figures as the same replay stored in full, row for row where rows are kept, count for count where they are not."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from core import views
from core.clock import session_bounds
from core.config import load_settings
from core.metrics import kpi, performance
from core.research.__main__ import main
from core.research.evaluation import evaluate_sessions
from core.research.replay import collect_stats, replay_days, run_replay
from core.state.decisions import COUNTED, decision_counts, decision_total, minute_of, rows_sql
from core.state.store import Store, iso

START = date(2025, 3, 3)
DAYS = 2
PARAMS = [  # loose, tight, the equity guards firing (the daily-loss halt, the stop-loss guard), manual mode
    {},
    {"cutoff_delta": -0.05, "mixer_cooldown_s": 60},
    {"cutoff_delta": 0.04, "mixer_cooldown_s": 300, "direction_lock_s": 300, "max_positions": 2},
    {"cutoff_delta": -0.05, "daily_loss_limit": 0.002, "protection_stoploss_count": 2},
    {"auto_mode": False},  # nothing approved: every intent waits and expires
]
# every table but the decision log itself: what the engine did must not depend on how decisions are stored
SAME_TABLES = {"trades": "id", "orders": "client_order_id", "fills": "id", "equity": "ts", "intents": "id",
               "positions": "symbol", "basket_state": "name", "token_stats": "minute, tier", "kv": "key",
               "counters": "key", "day_state": "date", "protections": "id", "notifications": "id",
               "sim_orders": "id", "sim_fills": "seq", "sim_positions": "symbol", "sim_account": "id"}
SIGNAL_COLUMNS = ("ts, bar_ts, symbol, tier, score, raw_score, vol_spike, cutoff, decision, reason, action, price")


def both(seed: int, **params) -> tuple:  # noqa: ANN003
    s = load_settings(**{"auto_mode": True, **params})
    full = run_replay(s, days=DAYS, seed=seed, start=START, decisions="full")
    summary = run_replay(s, days=DAYS, seed=seed, start=START, decisions="summary")
    return s, full, summary


def span() -> tuple[datetime, datetime]:
    sessions = replay_days(load_settings(), START, DAYS, None)  # type: ignore[arg-type]
    return (session_bounds(sessions[0])[0].astimezone(UTC) - timedelta(hours=12),
            session_bounds(sessions[-1])[1].astimezone(UTC))


def windows() -> list[tuple[datetime, datetime]]:
    """The replayed span, each session, and windows whose ends fall between the two ticks of a minute (a
    summary bucket straddles them: its first tick on one side, its last on the other)."""
    lo, hi = span()
    out = [(lo, hi)]
    for day in replay_days(load_settings(), START, DAYS, None):  # type: ignore[arg-type]
        o, c = (b.astimezone(UTC) for b in session_bounds(day))
        out.append((o, c))
        out += [(o + timedelta(minutes=41 * k, seconds=15), o + timedelta(minutes=41 * k + 47, seconds=45))
                for k in range(9)]
    return out


def table(store: Store, name: str, key: str) -> list[dict]:
    return store.query(f"SELECT * FROM {name} ORDER BY {key}")


def expected_counts(full: Store) -> list[dict]:
    """The summary buckets built by hand from the full rows of the decisions that never passed the cutoff."""
    buckets: dict[tuple, dict] = {}
    for r in full.query(f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE reason IN ({','.join('?' * len(COUNTED))}) "
                        "ORDER BY ts, id", tuple(sorted(COUNTED))):
        key = (r["symbol"], minute_of(r["ts"]), r["decision"], r["reason"])
        b = buckets.setdefault(key, {"symbol": key[0], "minute": key[1], "decision": key[2], "reason": key[3],
                                     "tier": r["tier"], "n": 0, "first_ts": r["ts"], "last_ts": r["ts"],
                                     "bar_ts": None, "price": None, "last_score": None})
        b["n"] += 1
        b["last_ts"], b["bar_ts"] = r["ts"], r["bar_ts"]
        if r["price"] is not None:
            b["price"] = r["price"]
        if r["score"] is not None:
            b["last_score"] = r["score"]
    return sorted(buckets.values(), key=lambda b: (b["symbol"], b["minute"], b["decision"], b["reason"]))


def stats_without_time(stats: dict) -> dict:
    out = dict(stats)
    out.pop("elapsed_s")
    return out


# each parameter set once, each with its own seed (every seed far above 5x fewer summary rows): the readers meet
# every set's mix of decisions and five markets, at a fifth of the cost of every pairing (the suite's time)
@pytest.mark.parametrize(("seed", "params"), list(zip([1, 2, 3, 4, 6], range(len(PARAMS)), strict=True)))
def test_full_and_summary_replays_give_every_reader_the_same_figures(seed, params):
    s, full, summary = both(seed, **PARAMS[params])
    f, m = full.store, summary.store
    # the same run: every table the engine writes besides the decision log
    for name, key in SAME_TABLES.items():
        assert table(f, name, key) == table(m, name, key), name
    # the summary keeps the full rows of everything that passed the cutoff, and counts the rest exactly
    kept = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE COALESCE(reason, '') NOT IN ('below_cutoff', " \
           "'rate_limited', 'no_data') ORDER BY ts, id"
    assert f.query(kept) == m.query(f"SELECT {SIGNAL_COLUMNS} FROM signals ORDER BY ts, id")
    assert f.scalar("SELECT COUNT(*) FROM signal_counts") == 0
    assert table(m, "signal_counts", "symbol, minute, decision, reason") == expected_counts(f)
    n_full, n_summary = f.scalar("SELECT COUNT(*) FROM signals"), m.scalar("SELECT COUNT(*) FROM signals")
    assert n_summary * 5 < n_full and n_full > 3000  # far fewer rows
    # research stats and metrics
    assert stats_without_time(full.stats) == stats_without_time(summary.stats)
    sessions = replay_days(s, START, DAYS, None)  # type: ignore[arg-type]
    assert stats_without_time(collect_stats(f, full.engine, sessions, 0.0)) == \
        stats_without_time(collect_stats(m, summary.engine, sessions, 0.0))
    assert performance.research_metrics(f, s.sim_start_cash, DAYS) == \
        performance.research_metrics(m, s.sim_start_cash, DAYS)
    # KPIs over the replayed span, each session and windows cutting through the summary buckets
    for lo, hi in windows():
        a, b = kpi.kpi_report(f, s, lo, hi), kpi.kpi_report(m, s, lo, hi)
        assert a == b, (lo, hi, {k: (a["all"][k], b["all"][k]) for k in a["all"] if a["all"][k] != b["all"][k]})
    whole = kpi.kpi_report(f, s, *span())["all"]
    assert whole["generated"] > 3000 and whole["signals_measured"] > 0 and whole["suppressed_by_reason"]["below_cutoff"]
    # the views: reason chart, decision totals, the KPI tables, the session verdicts
    assert views.suppression_counts(f).equals(views.suppression_counts(m))
    since = span()[0] + timedelta(hours=30, seconds=15)
    assert views.suppression_counts(f, since).equals(views.suppression_counts(m, since))
    assert views.signal_totals(f) == views.signal_totals(m)
    report_f, report_m = kpi.kpi_report(f, s, *span()), kpi.kpi_report(m, s, *span())
    for name, frame in views.kpi_tables(report_f).items():
        assert frame.equals(views.kpi_tables(report_m)[name]), name
    end = span()[1]
    assert evaluate_sessions(f, s, end) == evaluate_sessions(m, s, end)


def test_the_test_windows_cut_through_buckets():
    """Some window of the test above starts or ends between a bucket's first and last tick: a reader that put a
    bucket's whole count at one of its ticks would count differently."""
    _, _, summary = both(3)
    buckets = summary.store.query("SELECT first_ts, last_ts FROM signal_counts WHERE n = 2")
    cut = 0
    for lo, hi in windows():
        for edge in (iso(lo), iso(hi)):
            cut += sum(1 for b in buckets if b["first_ts"] <= edge < b["last_ts"])
    assert cut > 20


def test_the_forms_really_differ_and_the_readers_need_the_counts():
    """Summary runs store counts, full runs none; without the counts (or without their prices) the figures of a
    summary run would be wrong, so the equality tests above can fail."""
    s, full, summary = both(3)
    f, m = full.store, summary.store
    assert f.scalar("SELECT COUNT(*) FROM signal_counts") == 0
    assert m.scalar("SELECT SUM(n) FROM signal_counts") > 3000
    assert m.scalar("SELECT COUNT(*) FROM signals WHERE reason IN ('below_cutoff', 'rate_limited', 'no_data')") == 0
    want = kpi.kpi_report(f, s, *span())["all"]
    assert kpi.kpi_report(m, s, *span())["all"] == want
    # the prices of the buckets make the MAE/MFE paths: drop them and the excursions change
    m.execute("UPDATE signal_counts SET price = NULL")
    no_paths = kpi.kpi_report(m, s, *span())["all"]
    assert no_paths["generated"] == want["generated"]
    assert (no_paths["signal_mae_median"], no_paths["signal_mfe_median"]) != \
        (want["signal_mae_median"], want["signal_mfe_median"])
    # drop the counts and every count-based figure changes
    m.execute("DELETE FROM signal_counts")
    sessions = replay_days(s, START, DAYS, None)  # type: ignore[arg-type]
    blind = collect_stats(m, summary.engine, sessions, 0.0)
    assert blind["signals"] < full.stats["signals"] and "below_cutoff" not in blind["suppressed"]
    assert performance.research_metrics(m, s.sim_start_cash, DAYS)["signals"] < full.stats["metrics"]["signals"]
    assert kpi.kpi_report(m, s, *span())["all"]["generated"] < want["generated"]
    assert views.signal_totals(m) != views.signal_totals(f)


@pytest.mark.parametrize("stop", [300, 640, 1000])
def test_a_stopped_summary_replay_resumes_to_the_uninterrupted_database(tmp_path, stop):
    s = load_settings(auto_mode=True)
    whole = run_replay(s, days=DAYS, seed=8, start=START, db_path=str(tmp_path / "whole.db"))
    db = str(tmp_path / "resumed.db")
    first = run_replay(s, days=DAYS, seed=8, start=START, db_path=db, stop_after_ticks=stop)
    cursor = first.store.get_meta("replay_cursor")
    # the stop falls between the two ticks of a minute: its buckets hold one tick and get the other on resume
    split = first.store.query("SELECT symbol, minute, decision, reason FROM signal_counts WHERE last_ts = ? "
                              "AND n = 1 AND tier = 'A'", (cursor,))
    first.store.close()
    second = run_replay(s, days=DAYS, seed=8, start=START, db_path=db)
    assert split and any(second.store.scalar(
        "SELECT n FROM signal_counts WHERE symbol=? AND minute=? AND decision=? AND reason=?",
        (b["symbol"], b["minute"], b["decision"], b["reason"])) == 2 for b in split)
    a, b = whole.store, second.store
    names = [r["name"] for r in a.query("SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN "
                                        "('sqlite_sequence') ORDER BY name")]
    assert "signal_counts" in names
    for name in names:
        assert sorted(map(repr, a.query(f"SELECT * FROM {name}"))) == \
            sorted(map(repr, b.query(f"SELECT * FROM {name}"))), name
    assert stats_without_time(second.stats) == stats_without_time(whole.stats)


def test_research_runs_default_to_the_summary_form():
    res = run_replay(load_settings(auto_mode=True), days=1, seed=2, start=START)
    assert res.store.scalar("SELECT COUNT(*) FROM signal_counts") > 0
    assert res.store.scalar("SELECT COUNT(*) FROM signals WHERE reason='below_cutoff'") == 0
    with pytest.raises(ValueError, match="decisions"):
        run_replay(load_settings(), days=1, seed=2, start=START, decisions="compact")


def test_cli_decisions_flag(capsys):
    out = {}
    for flag in ([], ["--decisions", "full"], ["--decisions", "summary"]):
        assert main(["--days", "1", "--seed", "4", "--auto", "--json", *flag]) == 0
        d = json.loads(capsys.readouterr().out)
        d.pop("elapsed_s")
        out[tuple(flag)] = d
    assert out[()]["decisions"] == "summary" and out[("--decisions", "full")]["decisions"] == "full"
    assert out[()] == out[("--decisions", "summary")]
    assert {**out[()], "decisions": "full"} == out[("--decisions", "full")]
    with pytest.raises(SystemExit):
        main(["--days", "1", "--decisions", "rows"])
    with pytest.raises(SystemExit):
        main(["--days", "1", "--decisions", "full", "--sweep", "cooldown=60,120"])


# ---------------------------------------------------------------- the shared reader on hand-made rows
def hand_made() -> Store:
    st = Store(":memory:")
    rows = [("2025-03-03T14:31:00+00:00", "AAPL", "A", 0.9, 0.5, "actionable", None, 10.0),
            ("2025-03-03T14:31:30+00:00", "AAPL", "A", 0.6, 0.5, "suppressed", "mixer_cooldown", 10.5)]
    for ts, sym, tier, score, cutoff, decision, reason, price in rows:
        st.execute("INSERT INTO signals(ts, symbol, tier, score, cutoff, decision, reason, price) VALUES "
                   "(?,?,?,?,?,?,?,?)", (ts, sym, tier, score, cutoff, decision, reason, price))
    buckets = [("MSFT", "2025-03-03T14:31:00+00:00", "suppressed", "below_cutoff", "A", 2,
                "2025-03-03T14:31:00+00:00", "2025-03-03T14:31:30+00:00", 20.0, 0.1),
               ("NVDA", "2025-03-03T14:32:00+00:00", "skipped", "no_data", "B", 1,
                "2025-03-03T14:32:00+00:00", "2025-03-03T14:32:00+00:00", None, None),
               ("TSLA", "2025-03-03T14:33:00+00:00", "suppressed", "rate_limited", "Bench", 3,
                "2025-03-03T14:33:00+00:00", "2025-03-03T14:33:40+00:00", None, None)]
    for b in buckets:
        st.execute("INSERT INTO signal_counts(symbol, minute, decision, reason, tier, n, first_ts, last_ts, price, "
                   "last_score) VALUES (?,?,?,?,?,?,?,?,?,?)", b)
    return st


def test_rows_sql_counts_a_bucket_at_its_first_and_last_tick():
    st = hand_made()
    assert decision_counts(st) == {"actionable": 1, "skipped": 1, "suppressed": 6}
    assert decision_counts(st, ("decision", "reason"), "decision != 'actionable'") == {
        ("skipped", "no_data"): 1, ("suppressed", "below_cutoff"): 2, ("suppressed", "mixer_cooldown"): 1,
        ("suppressed", "rate_limited"): 3}
    assert decision_total(st, "decision != 'skipped'") == 7
    # a window between MSFT's two ticks takes one of them; (]: 14:31:00 excluded, [): included
    assert decision_counts(st, "symbol", start="2025-03-03T14:31:00+00:00", end="2025-03-03T14:31:15+00:00") == {}
    assert decision_counts(st, "symbol", start="2025-03-03T14:31:00+00:00", end="2025-03-03T14:31:15+00:00",
                           bounds="[)") == {"AAPL": 1, "MSFT": 1}
    assert decision_counts(st, "symbol", start="2025-03-03T14:31:15+00:00") == {"AAPL": 1, "MSFT": 1, "NVDA": 1,
                                                                                "TSLA": 3}
    # a bucket of more than two ticks: its first tick, and the rest at its last
    assert decision_total(st, "symbol='TSLA'", end="2025-03-03T14:33:20+00:00") == 1
    assert decision_total(st, "symbol='TSLA'", start="2025-03-03T14:33:20+00:00") == 2
    src, params = rows_sql()
    prices = st.query(f"SELECT symbol, ts, price FROM {src} WHERE price IS NOT NULL ORDER BY ts, id", params)
    assert [(r["symbol"], r["ts"][11:19], r["price"]) for r in prices] == [
        ("MSFT", "14:31:00", 20.0), ("AAPL", "14:31:00", 10.0), ("MSFT", "14:31:30", 20.0), ("AAPL", "14:31:30", 10.5)]
    with pytest.raises(ValueError, match="bounds"):
        rows_sql(bounds="[[")


def test_signal_kpis_weigh_counted_rows():
    st = hand_made()
    start = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
    k = kpi.compute_kpis(st, start, start + timedelta(hours=1))["all"]
    assert k["generated"] == 7 and k["actionable"] == 1 and k["suppressed"] == 6
    assert k["suppressed_by_reason"] == {"rate_limited": 3, "below_cutoff": 2, "mixer_cooldown": 1}
    # scored: AAPL's two rows and MSFT's two counted ones; strong: only the actionable one (0.9 >= 0.5 + 0.2)
    assert k["strong"] == 1 and k["strong_rate"] == pytest.approx(1 / 4)
    assert k["signal_mfe_median"] == pytest.approx(0.05)  # AAPL 10.0 -> 10.5 within the horizon
