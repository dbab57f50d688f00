"""Research metrics against values computed by hand on small fixtures."""

import math
from datetime import datetime

import pytest

from core.clock import NY, UTC
from core.metrics.figures import MIN_ANNUALISED_SESSIONS, daily_returns, drawdown, exposure, sharpe, sortino
from core.metrics.kpi import trade_kpis
from core.metrics.performance import equity_metrics, research_metrics
from core.state.store import Store


def t(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2025, 3, day, hh, mm, tzinfo=NY).astimezone(UTC)


def test_drawdown_and_its_duration():
    ts = [t(3, 10), t(3, 11), t(3, 12), t(3, 13), t(3, 14), t(3, 15)]
    eq = [100.0, 110.0, 99.0, 104.5, 110.0, 90.0]
    dd, dur = drawdown(ts, eq)
    # peak 110 -> trough 90 = 18.18 %, not yet recovered: duration to the last sample (11:00 -> 15:00)
    assert dd == pytest.approx(20 / 110)
    assert dur == 4 * 3600
    dd2, dur2 = drawdown(ts[:5], eq[:5])  # 110 -> 99 = 10 %, recovered at 14:00
    assert dd2 == pytest.approx(0.1) and dur2 == 3 * 3600
    assert drawdown(ts[:2], eq[:2]) == (0.0, 0.0)


def test_sharpe_and_sortino_by_hand():
    r = [0.01, -0.02, 0.03, 0.0]
    mean = 0.005
    sd = math.sqrt(((0.005) ** 2 + (0.025) ** 2 + (0.025) ** 2 + (0.005) ** 2) / 3)
    assert sharpe(r) == pytest.approx(mean / sd * math.sqrt(252))
    down = math.sqrt((0.02 ** 2) / 4)
    assert sortino(r) == pytest.approx(mean / down * math.sqrt(252))
    assert sharpe([0.01]) == 0.0 and sortino([0.01, 0.02]) == math.inf


def test_daily_returns_use_each_new_york_days_last_equity():
    ts = [t(3, 10), t(3, 15, 59), t(4, 9, 45), t(4, 16)]  # 16:00 ET on the 4th is 21:00 UTC, still the 4th in NY
    assert daily_returns(ts, [101.0, 102.0, 99.0, 103.02], 100.0) == pytest.approx([0.02, 0.01])


def test_trade_kpis_profit_factor_expectancy_mae_mfe():
    rows = [{"pnl": p, "mae": a, "mfe": f, "exit_reason": r} for p, a, f, r in zip(
        [30.0, -10.0, 20.0, -20.0], [-0.01, -0.03, 0.0, -0.02], [0.02, 0.0, 0.05, 0.01],
        ["take_profit", "stop_loss", "signal exit", "stop_loss"], strict=True)]
    s = trade_kpis(rows)
    assert s["trades"] == 4 and s["win_rate"] == 0.5 and s["pnl_realized"] == 20.0
    assert s["profit_factor"] == pytest.approx(50 / 30)
    assert s["expectancy"] == pytest.approx(5.0)
    assert s["mae_median"] == pytest.approx(-0.015) and s["mfe_median"] == pytest.approx(0.015)
    assert s["stop_out_rate"] == 0.5 and s["stop_outs"] == 2
    assert trade_kpis([{"pnl": 5.0, "mae": 0.0, "mfe": 0.0, "exit_reason": "x"}])["profit_factor"] == math.inf


def test_exposure_is_time_weighted_share_of_equity():
    assert exposure([0.0, 50.0, 100.0], [100.0, 100.0, 200.0]) == pytest.approx((0 + 0.5 + 0.5) / 3)


def test_research_metrics_from_a_store():
    st = Store(":memory:")
    for ts, eq, ex in ((t(3, 10), 100_000.0, 0.0), (t(3, 15), 101_000.0, 20_000.0), (t(4, 15), 99_990.0, 0.0)):
        st.insert("equity", {"ts": ts.isoformat(), "equity": eq, "cash": eq - ex, "exposure": ex})
    st.insert("trades", {"symbol": "AAPL", "kind": "entry", "qty": 10, "entry_ts": "a", "entry_price": 1,
                         "exit_ts": "b", "exit_price": 1, "pnl": -10.0, "ret": 0, "exit_reason": "stop_loss",
                         "mae": -0.02, "mfe": 0.01, "fees": 0})
    m = research_metrics(st, 100_000.0, sessions=2)
    assert m["total_return"] == pytest.approx(-0.0001)
    # two sessions are below MIN_ANNUALISED_SESSIONS: no CAGR (it was 0.9999 ** 126 - 1), Sharpe or Sortino
    assert m["cagr"] is None and m["sharpe"] is None and m["sortino"] is None
    # the account lost 10 (equity), and so did the one closed trade: two P&Ls, named apart
    assert m["pnl_total"] == -10.0 and m["pnl_realized"] == -10.0
    assert m["max_drawdown"] == pytest.approx(1010 / 101_000)
    assert m["trades"] == 1 and m["stop_out_rate"] == 1.0 and m["exposure"] == pytest.approx(20_000 / 101_000 / 3)


# ------------------------------------------------------------------ the minimum sample of annualised figures
def sessions_curve(n: int) -> tuple[list[datetime], list[float]]:
    """The 15:59 equity of ``n`` consecutive New York sessions from 2025-03-03 (weekends skipped), up and down."""
    from core.clock import trading_sessions

    days = trading_sessions(datetime(2025, 3, 3).date(), n)
    ts = [datetime(d.year, d.month, d.day, 15, 59, tzinfo=NY).astimezone(UTC) for d in days]
    equity = [100_000.0 * (1 + 0.004 * ((i % 3) - 0.8)) ** (i + 1) for i in range(n)]
    return ts, equity


@pytest.mark.parametrize("n", [MIN_ANNUALISED_SESSIONS - 1, MIN_ANNUALISED_SESSIONS])
def test_annualised_figures_need_twenty_sessions(n):
    ts, eq = sessions_curve(n)
    m = equity_metrics(ts, eq, 100_000.0, sessions=n)
    assert MIN_ANNUALISED_SESSIONS == 20
    assert m["total_return"] == pytest.approx(eq[-1] / 100_000.0 - 1)  # never withheld
    rets = daily_returns(ts, eq, 100_000.0)
    assert len(rets) == n
    if n < MIN_ANNUALISED_SESSIONS:
        assert m["cagr"] is None and m["sharpe"] is None and m["sortino"] is None
    else:
        assert m["sharpe"] == pytest.approx(sharpe(rets)) and m["sharpe"] != 0.0
        assert m["sortino"] == pytest.approx(sortino(rets))
        assert m["cagr"] == pytest.approx((eq[-1] / 100_000.0) ** (252 / n) - 1)


def test_the_sample_is_the_dates_with_equity_not_only_the_sessions_asked():
    ts, eq = sessions_curve(MIN_ANNUALISED_SESSIONS)
    # 20 sessions asked, but equity on 19 dates (a run cancelled before its last day): still too few
    short = equity_metrics(ts[:-1], eq[:-1], 100_000.0, sessions=MIN_ANNUALISED_SESSIONS)
    assert short["sharpe"] is None and short["cagr"] is None
    assert equity_metrics(ts, eq, 100_000.0, sessions=MIN_ANNUALISED_SESSIONS - 1)["sharpe"] is None


def test_research_metrics_apply_the_minimum_to_a_stored_run():
    for n in (MIN_ANNUALISED_SESSIONS - 1, MIN_ANNUALISED_SESSIONS):
        st = Store(":memory:")
        ts, eq = sessions_curve(n)
        for t_, e in zip(ts, eq, strict=True):
            st.insert("equity", {"ts": t_.isoformat(), "equity": e, "cash": e, "exposure": 0.0})
        m = research_metrics(st, 100_000.0, sessions=n)
        assert (m["sharpe"] is None) == (n < MIN_ANNUALISED_SESSIONS), n
        assert m["pnl_total"] == round(eq[-1] - 100_000.0, 2)
        # no closed trade: no win rate and no profit factor (not 0 %, which would read as "every trade lost")
        assert m["trades"] == 0 and m["win_rate"] is None and m["profit_factor"] is None
        assert m["pnl_realized"] == 0.0


def test_win_rate_and_profit_factor_appear_with_the_first_trade():
    one = trade_kpis([{"pnl": -5.0, "mae": 0.0, "mfe": 0.0, "exit_reason": "stop_loss"}])
    assert one["win_rate"] == 0.0 and one["profit_factor"] == 0.0
    none = trade_kpis([])
    assert none["win_rate"] is None and none["profit_factor"] is None and none["trades"] == 0
