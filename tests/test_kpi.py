"""KPIs (rules §11) on hand-made database rows: every expected figure below is worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.clock import NY, UTC
from core.metrics.figures import signal_excursion
from core.metrics.kpi import compute_kpis, token_overflow
from core.state.store import Store

T0 = datetime(2025, 3, 10, 14, 0, tzinfo=UTC)  # 10:00 New York


def sig(store: Store, minutes: float, symbol: str, score: float | None, price: float | None, *,
        decision: str = "suppressed", reason: str | None = "below_cutoff", cutoff: float | None = 0.35,
        tier: str = "A") -> None:
    store.insert("signals", {"ts": (T0 + timedelta(minutes=minutes)).isoformat(), "symbol": symbol, "tier": tier,
                             "score": score, "cutoff": cutoff if score is not None else None, "decision": decision,
                             "reason": None if decision == "actionable" else reason, "price": price})


def act(store: Store, minutes: float, symbol: str, score: float, price: float, tier: str = "A") -> None:
    sig(store, minutes, symbol, score, price, decision="actionable", tier=tier)


def trade(store: Store, minutes: float, symbol: str, pnl: float, reason: str, mae: float, mfe: float,
          kind: str = "entry") -> None:
    store.insert("trades", {"symbol": symbol, "kind": kind, "qty": 1, "entry_ts": T0.isoformat(), "entry_price": 100,
                            "exit_ts": (T0 + timedelta(minutes=minutes)).isoformat(), "exit_price": 100 + pnl,
                            "pnl": pnl, "ret": pnl / 100, "exit_reason": reason, "mae": mae, "mfe": mfe, "fees": 0})


@pytest.fixture
def store() -> Store:
    st = Store(":memory:")
    # AAPL long at 100: 98 after 5 min (-2 %), 103 after 20 min (+3 %), 90 after 40 min (past the 30-min horizon)
    act(st, 0, "AAPL", 0.60, 100.0)
    sig(st, 5, "AAPL", 0.10, 98.0)
    sig(st, 20, "AAPL", 0.20, 103.0)
    sig(st, 40, "AAPL", 0.05, 90.0)
    # NVDA evidence (negative score) at 50: 52 after 10 min is adverse (-4 %), 49 after 25 min favourable (+2 %)
    act(st, 0, "NVDA", -0.56, 50.0)
    sig(st, 10, "NVDA", -0.20, 52.0)
    sig(st, 25, "NVDA", -0.10, 49.0)
    # NVDA flips positive 8 min after its negative actionable signal: one flip-flop
    act(st, 8, "NVDA", 0.40, 51.0)
    # a tier-B actionable with nothing seen after it: not measured
    act(st, 50, "JPM", 0.45, 200.0, tier="B")
    # two direction-lock hits and a rate-limited attempt (no score), and a no-data skip (not generated)
    sig(st, 12, "NVDA", -0.50, 51.5, reason="direction_lock")
    sig(st, 13, "NVDA", -0.48, 51.4, reason="direction_lock")
    sig(st, 14, "TSLA", None, None, reason="rate_limited")
    sig(st, 15, "TSLA", None, None, decision="skipped", reason="no_data")
    trade(st, 30, "AAPL", 20.0, "take_profit", -0.01, 0.03)
    trade(st, 45, "NVDA", -15.0, "stop_loss", -0.02, 0.005)
    trade(st, 55, "SOXS", -5.0, "stop_loss", -0.03, 0.0, kind="basket")
    return st


def test_signal_excursion_follows_the_signals_direction():
    assert signal_excursion(100.0, [98.0, 103.0], 1) == pytest.approx((-0.02, 0.03))
    assert signal_excursion(50.0, [52.0, 49.0], -1) == pytest.approx((-0.04, 0.02))
    assert signal_excursion(10.0, [], 1) == (0.0, 0.0)


def test_window_kpis_match_the_hand_computed_figures(store):
    k = compute_kpis(store, T0 - timedelta(seconds=1), T0 + timedelta(hours=1))
    a = k["all"]
    # 13 rows: the no-data skip is not a generated signal; 4 actionable, 8 suppressed
    assert (a["generated"], a["actionable"], a["suppressed"]) == (12, 4, 8)
    assert a["suppressed_by_reason"] == {"below_cutoff": 5, "direction_lock": 2, "rate_limited": 1}
    assert a["direction_lock_hits"] == 2
    # scored rows: 11 (the rate-limited one has no score); strong = |score| >= 0.55: 0.60 and -0.56
    assert a["strong"] == 2 and a["strong_rate"] == pytest.approx(2 / 11)
    assert a["flip_flops"] == 1 and a["flip_flop_rate"] == pytest.approx(1 / 4)
    # measured: AAPL (-2 %, +3 %), NVDA- (-4 %, +2 %: its own flip at 51 is -2 %), NVDA+ at 51 over 52, 51.5,
    # 51.4 and 49 (everything up to 10:38); JPM has nothing after it
    nvda_up = signal_excursion(51.0, [52.0, 51.5, 51.4, 49.0], 1)
    assert nvda_up == pytest.approx((49 / 51 - 1, 52 / 51 - 1))
    maes = sorted([-0.02, -0.04, nvda_up[0]])
    mfes = sorted([0.03, 0.02, nvda_up[1]])
    assert a["signals_measured"] == 3
    assert a["signal_mae_median"] == pytest.approx(maes[1]) and a["signal_mfe_median"] == pytest.approx(mfes[1])
    # trades: +20, -15, -5: P&L 0, win rate 1/3, profit factor 20/20, two of three stopped out
    assert a["trades"] == 3 and a["pnl_realized"] == 0.0 and a["win_rate"] == pytest.approx(1 / 3)
    assert a["profit_factor"] == pytest.approx(1.0) and a["stop_out_rate"] == pytest.approx(2 / 3)
    assert a["trade_mae_median"] == pytest.approx(-0.02) and a["trade_mfe_median"] == pytest.approx(0.005)


def test_window_bounds_and_horizon(store):
    # (start, end]: the 10:00 rows are out when the window starts at 10:00; the horizon still reaches past `end`
    k = compute_kpis(store, T0, T0 + timedelta(minutes=8), horizon_s=600)["all"]
    assert k["actionable"] == 1  # NVDA +0.40 at 10:08 only
    assert k["signals_measured"] == 1  # later NVDA prices inside 10 min: 52, 51.5, 51.4 (10:10, 10:12, 10:13)
    assert k["signal_mfe_median"] == pytest.approx(1 / 51)  # 52 / 51 - 1
    assert k["signal_mae_median"] == 0.0


def test_breakdown_by_tier_and_basket(store):
    tiers = {"AAPL": "A", "NVDA": "A", "JPM": "B", "TSLA": "A"}
    baskets = {"NASDAQ": ("AAPL", "SQQQ"), "SEMIS": ("NVDA", "SOXS")}
    k = compute_kpis(store, T0 - timedelta(seconds=1), T0 + timedelta(hours=1), tiers=tiers, baskets=baskets)
    assert k["by_tier"]["B"]["actionable"] == 1 and k["by_tier"]["B"]["trades"] == 0
    assert k["by_tier"]["A"]["actionable"] == 3 and k["by_tier"]["A"]["trades"] == 2  # the ETF trade has no tier
    semis = k["by_basket"]["SEMIS"]
    assert semis["actionable"] == 2 and semis["flip_flops"] == 1
    assert semis["trades"] == 2 and semis["pnl_realized"] == -20.0 and semis["stop_out_rate"] == 1.0  # NVDA and SOXS
    assert k["by_basket"]["NASDAQ"]["trades"] == 1 and k["by_basket"]["NASDAQ"]["pnl_realized"] == 20.0


def test_token_overflow_per_tier_per_minute():
    st = Store(":memory:")
    m0 = T0.astimezone(NY)
    for minute, tier, req, granted, borrowed in ((0, "A", 8, 6, 0), (1, "A", 10, 10, 2), (0, "B", 3, 3, 0),
                                                 (2, "B", 4, 1, 0), (90, "A", 10, 0, 0)):
        st.insert("token_stats", {"minute": (m0 + timedelta(minutes=minute)).isoformat(), "tier": tier,
                                  "requested": req, "granted": granted, "borrowed": borrowed})
    t = token_overflow(st, T0 - timedelta(minutes=1), T0 + timedelta(hours=1))  # minute 90 is outside
    assert t["A"]["requested"] == 18 and t["A"]["denied"] == 2 and t["A"]["borrowed"] == 2
    assert t["A"]["overflow_rate"] == pytest.approx(2 / 18) and t["A"]["overflow_max_minute"] == pytest.approx(0.25)
    assert t["B"]["overflow_rate"] == pytest.approx(3 / 7) and t["B"]["overflow_max_minute"] == pytest.approx(0.75)
    k = compute_kpis(st, T0 - timedelta(minutes=1), T0 + timedelta(hours=1))
    assert k["all"]["tier_a_overflow_max"] == pytest.approx(0.25)
    assert k["by_tier"]["B"]["overflow_rate"] == pytest.approx(3 / 7)


def test_no_rows_give_zeros_not_errors():
    k = compute_kpis(Store(":memory:"), T0, T0 + timedelta(hours=1))["all"]
    assert k["generated"] == 0 and k["strong_rate"] == 0.0 and k["signal_mae_median"] == 0.0
    assert k["llm_calls"] == 0 and k["max_drawdown"] == 0.0

