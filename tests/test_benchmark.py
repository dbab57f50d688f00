"""Buy-and-hold benchmark lines against equity computed by hand on a few minutes of hand-made bars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.clock import session_bounds
from core.feed import MarketFeed
from core.metrics import figures
from core.research.benchmark import benchmark_metrics, benchmarks, buy_and_hold
from core.venues.sim.bar_files import ReplayMarket, validate_bars
from tests.helpers import ScriptedStrategy

D1, D2, D3 = date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5)  # Mon-Wed, EST: the open is 14:30 UTC
CASH = 1000.0


def minute(day: date, m: int) -> datetime:
    """The bar that opens ``m`` minutes after the session's open, in UTC."""
    return session_bounds(day)[0].astimezone(UTC) + timedelta(minutes=m)


def bar(ts: datetime, symbol: str, o: float, c: float) -> dict:
    return {"timestamp": ts, "symbol": symbol, "open": o, "high": max(o, c), "low": min(o, c), "close": c,
            "volume": 1000.0}


def feed_of(rows: list[dict], symbols: tuple[str, ...], days: list[date]) -> MarketFeed:
    frame = pd.DataFrame(rows).sort_values(["timestamp", "symbol"])
    feed = MarketFeed(ReplayMarket(validate_bars(frame, "test bars")),
                      ScriptedStrategy(lambda s, t: 0.0), symbols)
    feed.preload_sessions(days)
    return feed


# A: 10 -> 20 over the two sessions (doubles); B: 50 -> 50 (flat), no bar in D1's second minute.
A_BARS = [(D1, 0, 10, 10), (D1, 1, 10, 15), (D1, 2, 15, 20), (D2, 0, 20, 22), (D2, 1, 22, 20), (D2, 2, 20, 20)]
B_BARS = [(D1, 0, 50, 50), (D1, 2, 50, 55), (D2, 0, 55, 55), (D2, 1, 55, 50), (D2, 2, 50, 50)]


def base_rows() -> list[dict]:
    rows = [bar(minute(d, m), "A", o, c) for d, m, o, c in A_BARS]
    rows += [bar(minute(d, m), "B", o, c) for d, m, o, c in B_BARS]
    # outside the regular sessions listed: a pre-market bar, an after-hours bar, a session not in the range;
    # counted, they would change the entry price, add samples or move the end
    rows.append(bar(minute(D1, -30), "A", 5, 5))
    rows.append(bar(session_bounds(D2)[1].astimezone(UTC) + timedelta(minutes=5), "A", 40, 40))
    rows.append(bar(minute(D3, 0), "A", 80, 80))
    rows.append(bar(minute(D3, 0), "B", 90, 90))
    return rows


def test_equal_weight_basket_by_hand_with_a_forward_filled_minute_and_a_symbol_without_data():
    feed = feed_of(base_rows(), ("A", "B", "C", "QQQ"), [D1, D2, D3])
    curve = buy_and_hold(feed, ["A", "B", "C", "ZZZ"], [D1, D2], CASH)
    # C is in the feed without a bar, ZZZ is not in the feed: both left out, the cash split over A and B
    assert curve.attrs["held"] == ["A", "B"] and curve.attrs["left_out"] == ["C", "ZZZ"]
    qa, qb = (CASH / 2) / 10, (CASH / 2) / 50  # bought at the first bar's open
    expected = [qa * 10 + qb * 50, qa * 15 + qb * 50,  # B has no bar in minute 1: its last close, 50
                qa * 20 + qb * 55, qa * 22 + qb * 55, qa * 20 + qb * 50, qa * 20 + qb * 50]
    assert curve["equity"].tolist() == pytest.approx(expected)
    assert curve["equity"].iloc[-1] == pytest.approx(1.5 * CASH)  # A doubled, B flat
    # one sample per minute bar of the listed sessions, timed at the bar's close
    stamps = [minute(d, m) + timedelta(minutes=1) for d, m in [(D1, 0), (D1, 1), (D1, 2), (D2, 0), (D2, 1), (D2, 2)]]
    assert list(curve["ts"]) == [pd.Timestamp(t) for t in stamps]
    assert str(curve["ts"].dt.tz) == "UTC"


def test_a_symbol_that_starts_later_holds_its_share_as_cash_until_its_first_bar():
    rows = [bar(minute(d, m), "A", o, c) for d, m, o, c in A_BARS]
    rows += [bar(minute(D1, 2), "L", 4, 5), bar(minute(D2, 0), "L", 5, 8)]
    feed = feed_of(rows, ("A", "L"), [D1, D2])
    curve = buy_and_hold(feed, ["A", "L"], [D1, D2], CASH)
    qa, ql = 500 / 10, 500 / 4  # L's half is spent at the open of its first bar (D1 minute 2, 4.00)
    expected = [qa * 10 + 500, qa * 15 + 500, qa * 20 + ql * 5, qa * 22 + ql * 8, qa * 20 + ql * 8, qa * 20 + ql * 8]
    assert curve["equity"].tolist() == pytest.approx(expected)


def test_nothing_to_hold_is_an_empty_curve_with_every_symbol_reported():
    feed = feed_of(base_rows(), ("A", "B", "C"), [D1, D2])
    curve = buy_and_hold(feed, ["C", "ZZZ"], [D1, D2], CASH)
    assert curve.empty and curve.attrs["held"] == [] and curve.attrs["left_out"] == ["C", "ZZZ"]
    assert set(benchmark_metrics(curve, CASH, 2).values()) == {None}


def test_qqq_line_only_when_the_feed_has_qqq_bars_in_the_range():
    without = benchmarks(feed_of(base_rows(), ("A", "B", "QQQ"), [D1, D2]), ["A", "B"], [D1, D2], CASH)
    assert list(without) == ["equal_weight"]
    assert without["equal_weight"]["label"] == "Buy & hold, equal weight (2 symbols)"

    only_later = base_rows() + [bar(minute(D3, 0), "QQQ", 500, 500)]  # QQQ bars, but outside the range
    assert "QQQ" not in benchmarks(feed_of(only_later, ("A", "B", "QQQ"), [D1, D2, D3]), ["A", "B"], [D1, D2], CASH)

    rows = base_rows() + [bar(minute(D1, 0), "QQQ", 500, 505), bar(minute(D2, 2), "QQQ", 505, 550)]
    lines = benchmarks(feed_of(rows, ("A", "B", "QQQ"), [D1, D2]), ["A", "B"], [D1, D2], CASH)
    assert list(lines) == ["equal_weight", "QQQ"]
    q = lines["QQQ"]
    assert q["symbols"] == ["QQQ"] and q["left_out"] == []
    shares = CASH / 500
    # every minute of the range is a sample; QQQ's last close is carried over the minutes it has no bar
    assert q["curve"]["equity"].tolist() == pytest.approx([shares * 505] * 5 + [shares * 550])
    assert q["metrics"]["total_return"] == pytest.approx(550 / 500 - 1)
    # the equal-weight line is the basket alone: QQQ's bars do not change it
    assert lines["equal_weight"]["curve"]["equity"].tolist() == \
        without["equal_weight"]["curve"]["equity"].tolist()


def test_benchmark_metrics_are_the_strategy_metrics_functions_on_the_same_curve():
    feed = feed_of(base_rows(), ("A", "B"), [D1, D2])
    line = benchmarks(feed, ["A", "B"], [D1, D2], CASH)["equal_weight"]
    curve, m = line["curve"], line["metrics"]
    ts = [t.to_pydatetime() for t in curve["ts"]]
    eq = curve["equity"].tolist()
    rets = figures.daily_returns(ts, eq, CASH)
    # two sessions: the annualised figures are n/a for the benchmark as for the strategy (core.metrics.figures)
    assert m["sharpe"] is None and m["sortino"] is None and m["cagr"] is None
    dd, dd_s = figures.drawdown(ts, eq)
    assert m["max_drawdown"] == pytest.approx(dd) and m["max_drawdown_duration_s"] == pytest.approx(dd_s)
    # and by hand: D1 ends at 1550, D2 at 1500; the worst fall is 1650 -> 1500
    assert rets == pytest.approx([1550 / CASH - 1, 1500 / 1550 - 1])
    assert m["max_drawdown"] == pytest.approx((1650 - 1500) / 1650)
    assert m["total_return"] == pytest.approx(0.5)


@pytest.mark.parametrize("n", [figures.MIN_ANNUALISED_SESSIONS - 1, figures.MIN_ANNUALISED_SESSIONS])
def test_benchmark_annualised_figures_follow_the_strategys_minimum(n):
    from core.clock import trading_sessions

    days = trading_sessions(D1, n)
    # one close a session, alternating up and down so the returns vary
    ts = [session_bounds(d)[1].astimezone(UTC) for d in days]
    equity = [CASH * (1.01 if i % 2 else 0.995) ** (i + 1) for i in range(n)]
    m = benchmark_metrics(pd.DataFrame({"ts": pd.to_datetime(ts, utc=True), "equity": equity}), CASH, n)
    rets = figures.daily_returns(ts, equity, CASH)
    if n < figures.MIN_ANNUALISED_SESSIONS:
        assert m["sharpe"] is None and m["sortino"] is None and m["cagr"] is None
    else:
        assert m["sharpe"] == pytest.approx(figures.sharpe(rets)) and m["sharpe"] != 0.0
        assert m["sortino"] == pytest.approx(figures.sortino(rets))
        assert m["cagr"] == pytest.approx((equity[-1] / CASH) ** (252 / n) - 1)
    assert m["total_return"] == pytest.approx(equity[-1] / CASH - 1)


def test_a_date_that_is_not_a_session_is_refused():
    feed = feed_of(base_rows(), ("A", "B"), [D1, D2])
    with pytest.raises(ValueError, match="2025-03-08 is not a trading session"):
        buy_and_hold(feed, ["A"], [D1, date(2025, 3, 8)], CASH)
    assert np.isfinite(buy_and_hold(feed, ["A"], [D1], CASH)["equity"]).all()
