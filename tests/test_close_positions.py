"""Positions you can close (issue 17): the positions table's figures, Close one position, Flatten all.

The same scenarios run against the simulated broker and against Alpaca (the real alpaca-py ``TradingClient``
talking to the Alpaca-shaped server on 127.0.0.1). Prices are hand-made flat bars, so every figure below is
worked out by hand from them:

* AAPL trades at 100 until 10:10 New York time, then at 102; NVDA at 50 all day.
* At 10:00:30 the test buys 10 AAPL (stop 97, take-profit 106) and 20 NVDA (stop 48.5, take-profit 53); both
  fill at the open of the 10:01 bar plus 2 bps of slippage: AAPL at 100.02, NVDA at 50.01.
* A close sent at 10:20:10 fills at the 10:21 bar's open less 2 bps: AAPL at 101.9796, NVDA at 49.99.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core import views
from core.config import load_settings
from core.engine import Engine
from core.engine.intents import new_intent, save_intent, submit_intent
from core.state.store import Store
from core.universe import DEFAULT_UNIVERSE
from core.venues.alpaca.broker import AlpacaBroker, AlpacaCaller, RequestBudget, make_trading_client
from core.venues.sim.bar_files import ReplayMarket
from tests.fakes.alpaca_server import FakeAlpaca
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars, gap_at

KEY, SECRET = "PKCLOSETEST0123", "SECRETCLOSETEST0123456"
ENTRY = at(DAY, 10, 0, 30)
MARK = at(DAY, 10, 20)  # the table is read at this market time
CLOSE = at(DAY, 10, 20, 10)
SLIP = 2 / 10_000
AAPL_IN, NVDA_IN = 100.0 * (1 + SLIP), 50.0 * (1 + SLIP)  # 100.02, 50.01
AAPL_OUT, NVDA_OUT = 102.0 * (1 - SLIP), 50.0 * (1 - SLIP)  # 101.9796, 49.99
MSFT_SIGNAL = at(DAY, 10, 40)  # MSFT scores 0.9 from here on: a fresh entry signal after the flatten


def bars():
    return flat_bars([DAY], prices={"NVDA": 50.0}, overrides=gap_at("AAPL", at(DAY, 10, 10), 102.0))


def strategy() -> ScriptedStrategy:
    return ScriptedStrategy(lambda sym, ts: 0.9 if sym == "MSFT" and ts >= MSFT_SIGNAL else 0.0)


@pytest.fixture(params=["sim", "alpaca"])
def venue(request, tmp_path: Path) -> Iterator[tuple[Engine, FakeAlpaca | None]]:
    """An engine on the simulated broker, or on Alpaca through the fake server (the server's clock follows)."""
    s = load_settings(db_path=str(tmp_path / "e.db"), engine_jobs=False)
    if request.param == "sim":
        yield Engine(s, Store(s.db_path), ReplayMarket(bars()), strategy=strategy()), None
        return
    fake = FakeAlpaca(ReplayMarket(bars()), universe_symbols=list(DEFAULT_UNIVERSE.all_symbols), api_key=KEY,
                      secret_key=SECRET, rate_limit_per_min=1_000_000).start()
    fake.set_time(ENTRY)
    store = Store(s.db_path)
    client = make_trading_client(KEY, SECRET, paper=True, url_override=fake.url, timeout_s=5.0)
    broker = AlpacaBroker(store, client, caller=AlpacaCaller(RequestBudget(10_000), max_retries=2))
    try:
        yield Engine(s, store, ReplayMarket(bars()), strategy=strategy(), broker=broker), fake
    finally:
        fake.stop()
        assert fake.errors == []


def tick(e: Engine, fake: FakeAlpaca | None, t: datetime):
    if fake is not None:
        fake.set_time(t)
    return e.tick(t)


def run(e: Engine, fake: FakeAlpaca | None, start: datetime, end: datetime, step_s: int = 30) -> None:
    t = start
    while t <= end:
        tick(e, fake, t)
        t += timedelta(seconds=step_s)


def enter(e: Engine, symbol: str, qty: float, stop: float, tp: float) -> None:
    """Buy with bracket legs, as an approved entry would."""
    price = e.feed.price(symbol, ENTRY)
    intent = new_intent("entry", symbol, "buy", qty, price, ENTRY, 600, reason="test entry", source="test",
                        stop_price=stop, take_profit_price=tp)
    with e.store.transaction():
        save_intent(e.store, intent, "pending")
    assert submit_intent(e.store, e.broker, intent, ENTRY) is not None


def holding(venue) -> tuple[Engine, FakeAlpaca | None]:
    """AAPL x10 and NVDA x20 held since 10:01, marked at 10:20."""
    e, fake = venue
    tick(e, fake, ENTRY)
    enter(e, "AAPL", 10, 97.0, 106.0)
    enter(e, "NVDA", 20, 48.5, 53.0)
    run(e, fake, ENTRY + timedelta(seconds=30), MARK)
    assert {r["symbol"]: r["qty"] for r in e.store.query("SELECT * FROM positions")} == {"AAPL": 10, "NVDA": 20}
    return e, fake


def command(e: Engine, fake: FakeAlpaca | None, kind: str, payload: dict, who: str, now: datetime) -> dict:
    """A command as a page sends it, applied by the engine (as Runtime.send_command does)."""
    if fake is not None:
        fake.set_time(now)
    cid = e.store.send_command(kind, payload, who=who, now=now)
    e.apply_commands(now)
    return e.store.one("SELECT * FROM commands WHERE id=?", (cid,))


# ---------------------------------------------------------------- broker-side facts, one place for both venues


def sells(e: Engine, fake: FakeAlpaca | None, symbol: str) -> list[dict]:
    """Sell orders the broker holds for ``symbol`` that are not bracket legs (closing orders)."""
    st = e.store if fake is None else fake.sim_store
    return st.query("SELECT * FROM sim_orders WHERE symbol=? AND side='sell' AND parent_id IS NULL ORDER BY "
                    "submitted_at", (symbol,))


def legs(e: Engine, fake: FakeAlpaca | None, symbol: str) -> list[dict]:
    st = e.store if fake is None else fake.sim_store
    return st.query("SELECT leg, status FROM sim_orders WHERE symbol=? AND parent_id IS NOT NULL ORDER BY leg",
                    (symbol,))


def broker_positions(e: Engine, fake: FakeAlpaca | None, now: datetime) -> dict[str, float]:
    return {p.symbol: p.qty for p in e.broker.get_positions(now)}


# ---------------------------------------------------------------- the table


def test_positions_table_figures_are_the_hand_computed_ones(venue):
    e, _ = holding(venue)
    df = views.open_positions(Store(e.store.path, readonly=True), MARK).set_index("symbol")
    a, n = df.loc["AAPL"], df.loc["NVDA"]
    assert (a["qty"], a["last_price"], n["last_price"]) == (10, 102.0, 50.0)  # the 10:19 bar's close
    assert a["avg_entry"] == pytest.approx(100.02) and n["avg_entry"] == pytest.approx(50.01)
    assert a["market_value"] == pytest.approx(1020.0) and n["market_value"] == pytest.approx(1000.0)
    assert a["unrealized_pnl"] == pytest.approx((102.0 - 100.02) * 10)  # $19.80
    assert n["unrealized_pnl"] == pytest.approx((50.0 - 50.01) * 20)  # -$0.20
    assert a["unrealized_pct"] == pytest.approx(102.0 / 100.02 - 1)  # +1.98 %
    assert a["stop_price"] == 97.0 and a["to_stop_pct"] == pytest.approx((102 - 97) / 102)  # 4.90 % to fall
    assert a["to_take_profit_pct"] == pytest.approx((106 - 102) / 102)  # 3.92 % to rise
    assert n["to_stop_pct"] == pytest.approx(1.5 / 50) and n["to_take_profit_pct"] == pytest.approx(3 / 50)
    assert (a["age"], a["age_s"]) == ("19m 00s", 19 * 60.0)  # filled in the 10:01 bar; the market clock says 10:20
    assert a["opened_at"] == "2025-03-10 10:01:00" and a["closing"] == "" and a["price_at"] == "10:20:00"
    later = views.open_positions(e.store, MARK + timedelta(hours=2, minutes=5)).set_index("symbol")
    assert later.loc["AAPL", "age"] == "2h 24m"


def test_a_position_without_a_mark_shows_its_fill_price_until_the_engine_marks_it(tmp_path):
    """Marks are written once a market minute; a database from before them (or a fill ingested after the minute's
    mark) shows the last fill's price instead of nothing."""
    s = load_settings(db_path=str(tmp_path / "m.db"), engine_jobs=False)
    e = Engine(s, Store(s.db_path), ReplayMarket(bars()), strategy=strategy())
    e.tick(ENTRY)
    enter(e, "AAPL", 10, 97.0, 106.0)
    e.tick(at(DAY, 10, 1, 0))  # the fill lands, then the minute's marks (the 10:00 bar's close)
    assert views.open_positions(e.store, at(DAY, 10, 1, 0)).loc[0, "last_price"] == 100.0
    e.store.execute("DELETE FROM meta WHERE key='position_marks'")
    e.store.commit()
    df = views.open_positions(e.store, at(DAY, 10, 1, 0))
    assert df.loc[0, "last_price"] == pytest.approx(100.02) and df.loc[0, "unrealized_pnl"] == 0
    assert df.loc[0, "price_at"] == "10:01:00"
    e.tick(at(DAY, 10, 11, 0))  # a new minute: marked at the 10:10 bar's close
    assert views.open_positions(e.store, at(DAY, 10, 11, 0)).loc[0, "last_price"] == 102.0


# ---------------------------------------------------------------- Close


def test_close_one_position_sends_one_order_cancels_its_legs_and_books_a_manual_trade(venue):
    e, fake = holding(venue)
    assert [x["status"] for x in legs(e, fake, "AAPL")] == ["new", "new"]
    res = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    assert res["status"] == "done" and res["result"].startswith("closing AAPL x10"), res
    [order] = sells(e, fake, "AAPL")
    intent = e.store.one("SELECT * FROM intents WHERE kind='exit' AND symbol='AAPL'")
    assert order["client_order_id"] == intent["client_order_id"] and order["qty"] == 10
    assert (intent["reason"], intent["source"], intent["status"]) == ("manual_close", "ui:tab1", "submitted")
    assert [x["status"] for x in legs(e, fake, "AAPL")] == ["canceled", "canceled"]  # the bracket cannot fire now
    assert [x["status"] for x in legs(e, fake, "NVDA")] == ["new", "new"]  # the other position keeps its legs
    shown = views.open_positions(e.store, CLOSE).set_index("symbol")
    assert shown.loc["AAPL", "closing"].startswith("manual_close") and shown.loc["NVDA", "closing"] == ""
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 30))
    assert e.store.one("SELECT * FROM positions WHERE symbol='AAPL'") is None
    assert "AAPL" not in broker_positions(e, fake, at(DAY, 10, 30)) and "NVDA" in broker_positions(
        e, fake, at(DAY, 10, 30))
    [trade] = e.store.query("SELECT * FROM trades")
    assert (trade["symbol"], trade["qty"], trade["exit_reason"]) == ("AAPL", 10, "manual_close")
    assert trade["exit_price"] == pytest.approx(AAPL_OUT, abs=1e-6)
    assert trade["pnl"] == pytest.approx((AAPL_OUT - AAPL_IN) * 10, abs=1e-4)  # $19.60
    assert e.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'manual close: sold 10 AAPL%'") == 1
    assert len(sells(e, fake, "AAPL")) == 1  # nothing else was sold, no leg fired afterwards


def test_double_click_and_a_second_tab_make_exactly_one_closing_order(venue):
    e, fake = holding(venue)
    first = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    again = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)  # a double click
    other = command(e, fake, "close_position", {"symbol": "aapl "}, "ui:tab2", CLOSE + timedelta(seconds=5))
    assert first["result"].startswith("closing AAPL")
    assert again["result"].startswith("already closing AAPL (manual_close")
    assert other["result"].startswith("already closing AAPL (manual_close")
    assert len(sells(e, fake, "AAPL")) == 1
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE kind='exit'") == 1
    if fake is not None:
        assert fake.orders_created == 3  # two entries, one close
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 25))
    late = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab2", at(DAY, 10, 25, 5))
    assert (late["status"], late["result"]) == ("failed", "refused: no open position in AAPL: nothing to close")
    assert len(sells(e, fake, "AAPL")) == 1 and e.store.scalar("SELECT COUNT(*) FROM trades") == 1


def test_closing_a_symbol_without_a_position_is_refused_and_sends_nothing(venue):
    e, fake = holding(venue)
    before = e.store.scalar("SELECT COUNT(*) FROM orders")
    res = command(e, fake, "close_position", {"symbol": "TSLA"}, "ui:tab1", CLOSE)
    assert (res["status"], res["result"]) == ("failed", "refused: no open position in TSLA: nothing to close")
    for bad in ("", None, "AAPL; DROP", 7):
        res = command(e, fake, "close_position", {"symbol": bad}, "ui:tab1", CLOSE)
        assert res["status"] == "failed" and f"got {bad!r}" in res["result"], res
    assert e.store.scalar("SELECT COUNT(*) FROM orders") == before
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE kind='exit'") == 0
    if fake is not None:
        assert fake.orders_created == 2
    # and the broker port itself: no position, no order
    assert e.broker.close_position("TSLA", "tb-nothing-to-close", CLOSE) is None
    assert sells(e, fake, "TSLA") == []


def test_a_close_waiting_for_approval_is_superseded_not_sent_twice(venue):
    e, fake = holding(venue)
    waiting = new_intent("exit", "AAPL", "sell", 10, 102.0, CLOSE, 600, reason="signal exit", source="signal:AAPL")
    with e.store.transaction():
        save_intent(e.store, waiting, "pending")
    command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    assert e.store.one("SELECT status, note FROM intents WHERE id=?", (waiting.id,)) == {
        "status": "rejected", "note": "superseded by a manual close"}
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 22))
    assert len(sells(e, fake, "AAPL")) == 1


@pytest.mark.parametrize("venue", ["alpaca"], indirect=True)
def test_alpaca_close_answer_lost_is_retried_with_the_same_client_id(venue):
    e, fake = venue
    holding(venue)
    fake.inject("lost_response", path="/v2/orders", method="POST")
    # the look-up before the sell finds nothing; after the lost answer, asking what happened fails too
    fake.inject("drop", path="/v2/orders:by_client_order_id", after=1, times=3)
    res = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    assert "not confirmed by the broker" in res["result"] and "retried with the same client id" in res["result"]
    assert len(sells(e, fake, "AAPL")) == 1  # the lost one exists at the broker
    again = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab2", CLOSE)
    assert again["result"].startswith("already closing AAPL")
    fake.clear_faults()
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 25))
    assert len(sells(e, fake, "AAPL")) == 1 and fake.orders_created == 3
    [trade] = e.store.query("SELECT * FROM trades")
    assert trade["exit_reason"] == "manual_close" and trade["exit_price"] == pytest.approx(AAPL_OUT, abs=1e-6)


@pytest.mark.parametrize("venue", ["alpaca"], indirect=True)
def test_a_close_the_broker_refused_can_be_sent_again_as_a_new_attempt(venue):
    e, fake = venue
    holding(venue)
    fake.inject("reject_halted", path="/v2/orders", method="POST")
    first = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    assert "refused by the broker" in first["result"], first
    fake.clear_faults()
    again = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE + timedelta(seconds=5))
    assert again["result"].startswith("closing AAPL x10"), again  # a new attempt, with a new client id
    ids = [r["id"] for r in e.store.query("SELECT id FROM intents WHERE kind='exit' ORDER BY created_at, id")]
    assert len(ids) == 2 and ids[0].endswith("-1") and ids[1].endswith("-2")
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 25))
    [trade] = e.store.query("SELECT * FROM trades")
    assert trade["exit_reason"] == "manual_close" and trade["qty"] == 10


@pytest.mark.parametrize("venue", ["alpaca"], indirect=True)
def test_alpaca_close_cancels_the_legs_when_open_orders_are_listed_without_them(venue):
    """A nested listing of open orders can filter on the parent's status (a filled entry: its open legs are left
    out); the legs must be cancelled anyway, or they hold the shares and Alpaca refuses the sell."""
    e, fake = venue
    holding(venue)
    fake.nested_open_quirk = True
    res = command(e, fake, "close_position", {"symbol": "AAPL"}, "ui:tab1", CLOSE)
    assert res["result"].startswith("closing AAPL x10"), res
    assert [x["status"] for x in legs(e, fake, "AAPL")] == ["canceled", "canceled"]


# ---------------------------------------------------------------- Flatten all


def test_flatten_all_closes_everything_cancels_orders_pauses_entries_and_is_audited(venue):
    e, fake = holding(venue)
    e.set_params({"auto_mode": False}, who="test", now=CLOSE)
    # an entry still waiting for Approve, and one sent whose order has not filled yet: neither may open afterwards
    waiting = new_intent("entry", "TSLA", "buy", 5, 100.0, CLOSE, 600, reason="test", source="test")
    sent = new_intent("entry", "MSFT", "buy", 5, 100.0, CLOSE, 600, reason="test", source="test",
                      stop_price=97.0, take_profit_price=106.0)
    with e.store.transaction():
        save_intent(e.store, waiting, "pending")
        save_intent(e.store, sent, "pending")
    if fake is not None:
        fake.set_time(CLOSE)
    submit_intent(e.store, e.broker, sent, CLOSE)
    res = command(e, fake, "flatten_all", {}, "ui:tab1", CLOSE)
    assert res["status"] == "done", res
    assert "entries paused" in res["result"] and "closing AAPL x10" in res["result"] and "closing NVDA x20" in (
        res["result"])
    assert e.params.paused
    audit = e.store.one("SELECT * FROM param_audit WHERE name='paused'")
    assert (audit["who"], audit["old"], audit["new"], audit["source"]) == ("ui:tab1", "false", "true", "flatten")
    assert e.store.one("SELECT status, note FROM intents WHERE id=?", (waiting.id,)) == {
        "status": "rejected", "note": "rejected by flatten all"}
    assert e.store.scalar("SELECT status FROM orders WHERE client_order_id=?", (sent.client_order_id,)) == "canceled"
    for sym in ("AAPL", "NVDA"):
        assert [x["status"] for x in legs(e, fake, sym)] == ["canceled", "canceled"]
        assert len(sells(e, fake, sym)) == 1
    twice = command(e, fake, "flatten_all", {}, "ui:tab2", CLOSE + timedelta(seconds=3))  # another tab
    assert "AAPL already closing" in twice["result"] and "NVDA already closing" in twice["result"]
    run(e, fake, at(DAY, 10, 20, 30), at(DAY, 10, 30))
    assert e.store.query("SELECT * FROM positions") == [] and broker_positions(e, fake, at(DAY, 10, 30)) == {}
    assert len(sells(e, fake, "AAPL")) == 1 and len(sells(e, fake, "NVDA")) == 1  # still one each
    trades = {r["symbol"]: r for r in e.store.query("SELECT * FROM trades")}
    assert set(trades) == {"AAPL", "NVDA"} and {t["exit_reason"] for t in trades.values()} == {"flatten"}
    assert trades["NVDA"]["pnl"] == pytest.approx((NVDA_OUT - NVDA_IN) * 20, abs=1e-4)  # -$0.40
    assert e.store.scalar("SELECT COUNT(*) FROM fills WHERE symbol='MSFT'") == 0
    assert e.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'flatten all requested by ui:tab1%'") \
        == 1
    # a fresh entry signal afterwards is suppressed for the pause, and passes once the trader resumes
    run(e, fake, MSFT_SIGNAL, MSFT_SIGNAL + timedelta(minutes=2))
    assert e.store.scalar("SELECT COUNT(*) FROM signals WHERE symbol='MSFT' AND reason='paused'") >= 1
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE symbol='MSFT' AND id != ?", (sent.id,)) == 0
    e.set_params({"paused": False}, who="ui:tab1", now=MSFT_SIGNAL + timedelta(minutes=2))
    run(e, fake, MSFT_SIGNAL + timedelta(minutes=2, seconds=30), MSFT_SIGNAL + timedelta(minutes=4))
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE symbol='MSFT' AND id != ?", (sent.id,)) == 1
    if fake is not None:  # every closing order carries our client id: Alpaca's DELETE /v2/positions is never used
        assert ("DELETE", "/v2/positions") not in fake.requests
        ours = {r["client_order_id"] for r in e.store.query("SELECT client_order_id FROM intents WHERE kind='exit'")}
        assert {o["client_order_id"] for s in ("AAPL", "NVDA") for o in sells(e, fake, s)} == ours


def test_flatten_with_nothing_held_pauses_and_sends_nothing(venue):
    e, fake = venue
    tick(e, fake, ENTRY)
    res = command(e, fake, "flatten_all", {}, "ui:tab1", ENTRY)
    assert res["status"] == "done" and res["result"] == "entries paused" and e.params.paused
    assert e.store.scalar("SELECT COUNT(*) FROM orders") == 0
    if fake is not None:
        assert fake.order_posts == 0


# ---------------------------------------------------------------- the broker ports directly


def test_close_all_positions_port_keeps_earlier_closes_and_reports_each_symbol(venue):
    e, fake = holding(venue)
    if fake is not None:
        fake.set_time(CLOSE)
    first = e.broker.close_all_positions(CLOSE, {"AAPL": "tb-close-a", "NVDA": "tb-close-n"})
    assert [(r.symbol, r.order.client_order_id, r.message) for r in first] == [
        ("AAPL", "tb-close-a", None), ("NVDA", "tb-close-n", None)]
    again = e.broker.close_all_positions(CLOSE, {"AAPL": "tb-close-a", "NVDA": "tb-close-n", "TSLA": "tb-close-t"})
    assert [(r.symbol, r.order and r.order.id, r.message) for r in again] == [
        ("AAPL", first[0].order.id, None), ("NVDA", first[1].order.id, None), ("TSLA", None, "no position")]
    assert [o["status"] for o in sells(e, fake, "AAPL")] == ["new"]  # the repeat did not cancel its own close


def test_fake_alpaca_close_all_positions_answers_alpacas_multi_status_shape(tmp_path):
    """DELETE /v2/positions?cancel_orders=true through alpaca-py: a list of {symbol, status, body: order}."""
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, OrderStatus
    from alpaca.trading.models import ClosePositionResponse, Order
    from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

    with FakeAlpaca(ReplayMarket(bars()), universe_symbols=list(DEFAULT_UNIVERSE.all_symbols)) as fake:
        fake.set_time(ENTRY)
        client = TradingClient("test-key", "test-secret", paper=True, url_override=fake.url)
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force="day",
                                               order_class="bracket", take_profit=TakeProfitRequest(limit_price=106),
                                               stop_loss=StopLossRequest(stop_price=97)))
        fake.open_position("NVDA", 20, 50.0)
        fake.set_time(at(DAY, 10, 2))
        foreign = fake.add_foreign_order("TSLA", "buy", 3)
        answer = client.close_all_positions(cancel_orders=True)
        assert [(type(r), r.symbol, r.status) for r in answer] == [(ClosePositionResponse, "AAPL", 200),
                                                                  (ClosePositionResponse, "NVDA", 200)]
        assert all(isinstance(r.body, Order) and r.body.side == OrderSide.SELL for r in answer)
        assert [r.body.qty for r in answer] == ["10", "20"]
        assert client.get_order_by_id(foreign).status == OrderStatus.CANCELED
        leg_rows = fake.sim_store.query("SELECT status FROM sim_orders WHERE parent_id IS NOT NULL")
        assert len(leg_rows) == 2 and {x["status"] for x in leg_rows} == {"canceled"}
        fake.set_time(at(DAY, 10, 4))
        assert client.get_all_positions() == []
        assert client.close_all_positions() == []  # nothing left to close
        assert ("DELETE", "/v2/positions") in fake.requests
