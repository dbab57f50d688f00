"""Money with fees (rules §9): a fee per order and per share, followed from the broker's fill to every figure.

Each fill's fee is in its fill row; a trade's realised P&L is its gross (exit - entry) x qty less the fees of
both of its fills; the cash, the equity, the KPIs, a saved run's figures and every CSV agree to the cent. The
numbers are worked out here by hand from the scenario (flat prices, no slippage): a fill of 266 shares pays
1.25 + 0.01 x 266 = 3.91. 266 shares: 0.5 % of 100,000 over a 1.5 % stop is 333 shares, capped by one slot of
the exposure, 80 % x 100,000 / 3 = 26,667 at 100 (rules §7).
"""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from core import views
from core.clock import SimClock
from core.config import load_settings
from core.feed import MarketFeed
from core.metrics import kpi
from core.research import record, runs
from core.research.replay import run_replay
from core.research.sources import DataSource
from core.runtime import Runtime
from core.state.store import Store
from core.venues.sim.bar_files import ReplayMarket
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars, make_engine

PER_ORDER, PER_SHARE = 1.25, 0.01
QTY = 266
FEE = 3.91  # 1.25 + 0.01 x 266
CENT = 0.005
FEES = {"sim_fee_per_order": PER_ORDER, "sim_fee_per_share": PER_SHARE, "sim_slippage_bps": 0.0, "auto_mode": True}


def moves(table: dict[str, list[tuple[datetime, float]]]):
    """A ``flat_bars`` override: each symbol trades at a price from each time on (open, high, low, close)."""
    def edit(sym, idx, arr):
        for when, price in table.get(sym, []):
            for k in ("open", "high", "low", "close"):
                arr[k][idx >= when] = price
    return edit


def entry_window(*symbols: str, start: datetime, minutes: int = 5):
    """score 0.6 for ``symbols`` on the bars of [start, start + minutes): one long entry each."""
    end = start + timedelta(minutes=minutes)
    return lambda sym, ts: 0.6 if sym in symbols and start <= ts < end else 0.0


def csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data))


# ------------------------------------------------------------------ a replay: a take-profit, a stop-out, one held

REPLAY_BARS = moves({"NVDA": [(at(DAY, 10, 30), 104.0)],  # through the 103 take-profit: fills at the open, 104
                     "TSLA": [(at(DAY, 10, 40), 97.0)],  # through the 98.5 stop: fills at the open, 97
                     "AAPL": [(at(DAY, 11, 0), 101.0)]})  # held to the end, marked at 101


@pytest.fixture(scope="module")
def replay():
    s = load_settings(**FEES)
    feed = MarketFeed(ReplayMarket(flat_bars([DAY], overrides=REPLAY_BARS)),
                      ScriptedStrategy(entry_window("NVDA", "TSLA", "AAPL", start=at(DAY, 10, 0))),
                      s.universe.all_symbols)
    res = run_replay(s, start=DAY, end=DAY, seed=0, feed=feed, path="reference")
    yield s, res
    res.store.close()


def test_replay_fills_carry_their_fees(replay):
    _, res = replay
    fills = res.store.query("SELECT symbol, side, qty, price, fee FROM fills ORDER BY ts, symbol, side")
    assert [(f["symbol"], f["side"], f["qty"], f["price"]) for f in fills] == [
        ("AAPL", "buy", QTY, 100.0), ("NVDA", "buy", QTY, 100.0), ("TSLA", "buy", QTY, 100.0),
        ("NVDA", "sell", QTY, 104.0), ("TSLA", "sell", QTY, 97.0)]
    assert all(f["fee"] == pytest.approx(FEE, abs=1e-9) for f in fills)


def test_replay_trades_are_gross_less_both_fills_fees(replay):
    _, res = replay
    trades = {t["symbol"]: t for t in res.store.query("SELECT * FROM trades")}
    assert set(trades) == {"NVDA", "TSLA"}
    assert trades["NVDA"]["exit_reason"] == "take_profit" and trades["TSLA"]["exit_reason"] == "stop_loss"
    assert trades["NVDA"]["pnl"] == pytest.approx(1056.18, abs=CENT)  # 4 x 266 - 2 x 3.91
    assert trades["TSLA"]["pnl"] == pytest.approx(-805.82, abs=CENT)  # -3 x 266 - 2 x 3.91
    assert trades["NVDA"]["fees"] == pytest.approx(7.82, abs=CENT) and trades["TSLA"]["fees"] == pytest.approx(
        7.82, abs=CENT)


def test_replay_cash_equity_kpis_saved_run_and_csvs_agree_to_the_cent(replay, tmp_path):
    s, res = replay
    st = res.store
    # cash: 100,000 - 3 x (26,600 + 3.91) + (27,664 - 3.91) + (25,802 - 3.91)
    cash = 73_646.45
    equity = cash + QTY * 101.0  # AAPL marked at 101: 100,512.45
    last = st.one("SELECT cash, equity FROM equity ORDER BY ts DESC LIMIT 1")
    assert last["cash"] == pytest.approx(cash, abs=CENT) and last["equity"] == pytest.approx(equity, abs=CENT)
    assert res.engine.broker.get_account(at(DAY, 15, 59)).cash == pytest.approx(cash, abs=CENT)
    realized = 1056.18 - 805.82
    assert res.stats["pnl_total"] == pytest.approx(512.45, abs=CENT)  # realised + AAPL's 266 - its entry fee
    m = res.stats["metrics"]
    assert m["pnl_total"] == pytest.approx(512.45, abs=CENT) and m["pnl_realized"] == pytest.approx(realized,
                                                                                                    abs=CENT)
    assert kpi.summary(st)["pnl_realized"] == pytest.approx(realized, abs=CENT)
    assert views.trade_summary(st)["pnl_realized"] == pytest.approx(realized, abs=CENT)
    report = kpi.kpi_report(st, s, at(DAY, 9, 30), at(DAY, 16, 0))
    assert report["all"]["pnl_realized"] == pytest.approx(realized, abs=CENT)
    assert report["by_tier"]["A"]["pnl_realized"] == pytest.approx(realized, abs=CENT)
    # the trades CSV of the page
    page = csv(views.trades_csv(st)).set_index("symbol")
    assert page.loc["NVDA", "pnl"] == pytest.approx(1056.18, abs=CENT)
    assert page.loc["TSLA", "fees"] == pytest.approx(7.82, abs=CENT)
    assert page["pnl"].sum() == pytest.approx(realized, abs=CENT)
    # the saved run, and its two CSVs
    rec = record.replay_record(res, s, DataSource("file", file_name="bars.csv"), {}, [DAY])
    app = Store(str(tmp_path / "app.db"))
    run = runs.load_run(app, record.save_replay(app, "fees", rec, created_at=datetime(2025, 3, 11, tzinfo=UTC)))
    assert run["metrics"]["pnl_total"] == pytest.approx(512.45, abs=CENT)
    assert run["metrics"]["pnl_realized"] == pytest.approx(realized, abs=CENT)
    saved_trades = csv(runs.run_trades_csv(run)).set_index("symbol")
    assert saved_trades.loc["NVDA", "pnl"] == pytest.approx(1056.18, abs=CENT)
    assert saved_trades.loc["TSLA", "pnl"] == pytest.approx(-805.82, abs=CENT)
    assert saved_trades["fees"].sum() == pytest.approx(4 * FEE, abs=CENT)
    curve = csv(runs.run_equity_csv(run))
    assert curve["equity"].iloc[-1] == pytest.approx(equity, abs=CENT)
    app.close()


# ------------------------------------------------------------------ a live session: partial fills, Close, Flatten all

SESSION_BARS = moves({"AAPL": [(at(DAY, 10, 20), 102.0)],  # closed by hand at 10:30
                      "NVDA": [(at(DAY, 10, 50), 99.0)], "MSFT": [(at(DAY, 10, 50), 99.0)]})  # flattened at 11:00
SPLIT = 100  # a partial fill: the broker reports the order's first 100 shares, then the rest


def split_fills(broker, pieces: set[tuple[str, str]]):
    """The broker reports the fill of each (symbol, side) in ``pieces`` as two fills of its order, as Alpaca
    reports a partial fill: 100 shares paying the order's fee and their per-share fee, 0.166 below the price, then
    the rest paying theirs, 0.10 above it. The account was charged the whole fee once and the whole notional:
    the two fees add up to that fee, the two notionals to that notional (100 x -0.166 + 166 x 0.10 = 0)."""
    whole = broker.fills_since

    def fills_since(cursor):
        fills, new_cursor = whole(cursor)
        out = []
        for f in fills:
            if (f.symbol, f.side) in pieces and f.qty > SPLIT:
                rest = f.qty - SPLIT
                assert rest == 166
                out += [dataclasses.replace(f, id=f"{f.id}-1", qty=SPLIT, price=f.price - 0.166,
                                            fee=PER_ORDER + PER_SHARE * SPLIT),
                        dataclasses.replace(f, id=f"{f.id}-2", qty=rest, price=f.price + 0.10, fee=PER_SHARE * rest)]
            else:
                out.append(f)
        return out, new_cursor

    broker.fills_since = fills_since


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = load_settings(db_path=str(tmp_path_factory.mktemp("live") / "live.db"), engine_jobs=False,
                      strategy="tests.fakes.strategies:MorningThree", sim_fee_per_order=PER_ORDER,
                      sim_fee_per_share=PER_SHARE, auto_mode=True)  # the default 2 bps slippage
    clock = SimClock(at(DAY, 9, 45))
    rt = Runtime(s, clock=clock, market=ReplayMarket(flat_bars([DAY], overrides=SESSION_BARS)))
    split_fills(rt.engine.broker, {("NVDA", "buy"), ("AAPL", "sell")})
    results = {}
    t = at(DAY, 9, 45)
    while t <= at(DAY, 11, 10):
        clock.set(t)
        rt.run_tick()
        if t == at(DAY, 10, 30):
            results["close"] = rt.send_command("close_position", {"symbol": "AAPL"}, who="trader")
        if t == at(DAY, 11, 0):
            results["flatten"] = rt.send_command("flatten_all", {}, who="trader")
        t += timedelta(seconds=30)
    rt.run_stop_checks()
    yield s, rt, results
    rt.stop()


def fee_of(qty: float, first: bool = True) -> float:
    """rules §9: 1.25 an order (on its first fill) + 0.01 a share."""
    return (PER_ORDER if first else 0.0) + PER_SHARE * qty


def test_session_fills_carry_their_fees_partial_ones_too(session):
    _, rt, results = session
    assert results["close"]["status"] == "done" and results["flatten"]["status"] == "done", results
    fills = rt.store.query("SELECT * FROM fills ORDER BY ts, id")
    by = {}
    for f in fills:
        by.setdefault((f["symbol"], f["side"]), []).append(f)
    assert sorted(by) == [("AAPL", "buy"), ("AAPL", "sell"), ("MSFT", "buy"), ("MSFT", "sell"), ("NVDA", "buy"),
                          ("NVDA", "sell")]
    for key, rows in by.items():
        assert sum(r["qty"] for r in rows) == QTY, key
        if key in (("NVDA", "buy"), ("AAPL", "sell")):  # reported in two pieces
            assert [r["qty"] for r in rows] == [SPLIT, QTY - SPLIT]
            assert rows[0]["fee"] == pytest.approx(2.25, abs=1e-9) and rows[1]["fee"] == pytest.approx(1.66, abs=1e-9)
        else:
            assert [r["fee"] for r in rows] == [pytest.approx(FEE, abs=1e-9)], key
    reasons = {t["symbol"]: t["exit_reason"] for t in rt.store.query("SELECT * FROM trades")}
    assert reasons == {"AAPL": "manual_close", "NVDA": "flatten", "MSFT": "flatten"}


def test_session_trades_are_gross_less_their_fills_fees(session):
    _, rt, _ = session
    st = rt.store
    trades = st.query("SELECT * FROM trades ORDER BY id")
    fills = st.query("SELECT * FROM fills ORDER BY ts, id")
    for sym in ("AAPL", "NVDA", "MSFT"):
        buys = [f for f in fills if f["symbol"] == sym and f["side"] == "buy"]
        sells = [f for f in fills if f["symbol"] == sym and f["side"] == "sell"]
        mine = [t for t in trades if t["symbol"] == sym]
        assert len(mine) == len(sells)  # a sale in two pieces closes the position in two trades
        entry = sum(b["qty"] * b["price"] for b in buys) / QTY
        entry_fees = sum(b["fee"] for b in buys)
        for t, sale in zip(mine, sells, strict=True):
            assert t["qty"] == sale["qty"] and t["entry_price"] == pytest.approx(entry, abs=1e-9)
            share = entry_fees * sale["qty"] / QTY  # the entry fees in proportion to the shares it closes
            assert t["fees"] == pytest.approx(sale["fee"] + share, abs=1e-9)
            assert t["pnl"] == pytest.approx((sale["price"] - entry) * sale["qty"] - sale["fee"] - share, abs=1e-6)
        # all of a position's trades: the gross less every fee of its fills, each once
        gross = sum(s["qty"] * s["price"] for s in sells) - entry * QTY
        assert sum(t["pnl"] for t in mine) == pytest.approx(gross - 2 * FEE, abs=CENT)
        assert sum(t["fees"] for t in mine) == pytest.approx(2 * FEE, abs=CENT)


def test_session_cash_equity_kpis_and_csv_agree_to_the_cent(session):
    s, rt, _ = session
    st = rt.store
    now = rt.clock.now()
    fills = st.query("SELECT * FROM fills")
    # the cash, from the fills alone: what was paid for the buys, got for the sales, and every fee
    cash = 100_000.0 + sum((-1 if f["side"] == "buy" else 1) * f["qty"] * f["price"] - f["fee"] for f in fills)
    assert sum(f["fee"] for f in fills) == pytest.approx(6 * FEE, abs=1e-9)
    acct = rt.engine.broker.get_account(now)
    assert acct.cash == pytest.approx(cash, abs=CENT) and acct.equity == pytest.approx(cash, abs=CENT)  # flat
    assert st.scalar("SELECT COUNT(*) FROM positions WHERE qty > 0") == 0
    last = st.one("SELECT cash, equity FROM equity ORDER BY ts DESC LIMIT 1")
    assert last["cash"] == pytest.approx(cash, abs=CENT) and last["equity"] == pytest.approx(cash, abs=CENT)
    realized = cash - 100_000.0  # flat at the end: every cent of the change is realised
    assert realized < 0  # AAPL's gain is smaller than NVDA's and MSFT's losses and the fees
    assert st.scalar("SELECT SUM(pnl) FROM trades") == pytest.approx(realized, abs=CENT)
    assert kpi.summary(st)["pnl_realized"] == pytest.approx(realized, abs=CENT)
    assert views.trade_summary(st)["pnl_realized"] == pytest.approx(realized, abs=CENT)
    report = kpi.kpi_report(st, s, at(DAY, 9, 30), now)
    assert report["all"]["pnl_realized"] == pytest.approx(realized, abs=CENT)
    rt.run_kpi_snapshot()  # the hourly snapshot (the hour just ended holds the flatten's trades)
    page = csv(views.trades_csv(st))
    assert page["pnl"].sum() == pytest.approx(realized, abs=CENT)
    assert page["fees"].sum() == pytest.approx(6 * FEE, abs=CENT)
    assert len(page) == 4  # AAPL in two pieces, NVDA, MSFT


def test_a_sale_of_more_than_the_position_closes_the_position_only():
    # a broker's sale larger than the position the engine knows (an order it did not send, a stale count)
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(lambda s, t: 0.0))
    e.tick(at(DAY, 10, 0))
    ts = at(DAY, 10, 1)
    e.ledger._apply_fill_to_positions("NVDA", "buy", 10, 100.0, 1.0, ts, "cid-buy", None)
    e.ledger._apply_fill_to_positions("NVDA", "sell", 15, 101.0, 2.0, ts + timedelta(minutes=1), "cid-sell", None)
    [t] = e.store.query("SELECT * FROM trades")
    assert t["qty"] == 10 and t["pnl"] == pytest.approx(10 * 1.0 - 1.0 - 2.0) and t["fees"] == pytest.approx(3.0)
    assert "NVDA" not in e.book.positions
