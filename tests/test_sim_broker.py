"""The simulated broker keeps its book in memory and writes it through to the ``sim_*`` tables: a broker rebuilt on
the same database (a restart) is the broker that wrote it, and no read goes back to the tables."""

from __future__ import annotations

import copy
import sqlite3
from datetime import timedelta

import pytest

from core.feed import MarketFeed
from core.state.store import Store
from core.universe import DEFAULT_UNIVERSE
from core.venues.broker import OrderRequest
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.broker import SimBroker, _Order
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars

T0 = at(DAY, 10, 0)


def _moves(sym, idx, arr):  # noqa: ANN001
    """NVDA dips to 99 at 10:30 (its stop fires); AAPL trades up to 111 from 14:00 (its take-profit fires)."""
    minutes = (idx - idx[0]).total_seconds() / 60  # minutes since the 9:30 open
    if sym == "NVDA":
        arr["low"][minutes >= 60] = 99.0
    if sym == "AAPL":
        arr["high"][minutes >= 270] = 111.0
    if sym == "MSFT":
        for k in ("open", "high", "low", "close"):
            arr[k][:] = 101.37 + 0.013 * minutes  # prices whose sums are not round


def feed() -> MarketFeed:
    f = MarketFeed(ReplayMarket(flat_bars([DAY], overrides=_moves)), ScriptedStrategy(lambda s, t: 0.0),
                   DEFAULT_UNIVERSE.all_symbols)
    f.ensure(at(DAY, 15, 59))
    return f


def broker(db: str) -> SimBroker:
    return SimBroker(Store(db), feed(), start_cash=100_000.0, slippage_bps=2.0, fee_per_order=1.25)


def book(b: SimBroker, now) -> dict:  # noqa: ANN001
    """Everything the broker answers, plus the in-memory book itself."""
    orders = b.list_orders(open_only=False)
    legs = [b.get_order_by_client_id(f"{o.client_order_id}-{x}") for o in orders for x in ("st", "ta")]
    return {
        "orders": orders, "open": b.list_orders(open_only=True), "legs": legs,
        "positions": b.get_positions(now), "account": b.get_account(now), "cash": b._cash(),
        "fills": b.fills_since(0), "fills_after_2": b.fills_since(2),
        "book": copy.deepcopy((b._orders, b._pos, b._seqs)),
    }


def rows_as_book(store: Store) -> dict:
    return {r["id"]: _Order.from_row(r) for r in store.query("SELECT * FROM sim_orders")}


def test_a_restarted_broker_is_the_broker_that_wrote_the_tables(tmp_path):
    db = str(tmp_path / "sim.db")
    a = broker(db)
    a.submit_order(OrderRequest("AAPL", "buy", 10, "aapl", stop_price=95.0, take_profit_price=110.0), T0)
    a.submit_order(OrderRequest("NVDA", "buy", 5, "nvda", stop_price=99.5, take_profit_price=101.0), T0)
    a.submit_order(OrderRequest("MSFT", "buy", 7, "msft"), T0)
    a.submit_order(OrderRequest("TSLA", "buy", 2, "tsla", stop_price=90.0, take_profit_price=120.0), T0)
    assert a.submit_order(OrderRequest("AMD", "buy", 0.5, "half"), T0).status == "rejected"
    a.cancel_order(a.get_order_by_client_id("tsla").id, T0)
    a.sync(T0 + timedelta(minutes=2))
    assert a.close_position("MSFT", "msft-out", T0 + timedelta(minutes=5)) is not None
    a.sync(at(DAY, 11, 0))  # MSFT sold, NVDA's stop fired (take-profit canceled)
    late = at(DAY, 11, 0, 30)
    a.submit_order(OrderRequest("META", "buy", 3, "meta", stop_price=95.0, take_profit_price=105.0), late)
    a.sync(late)  # META's bar has not opened yet: open entry, legs held
    before = book(a, late)
    assert [o.client_order_id for o in before["open"]] == ["meta"]
    assert {o.client_order_id: o.status for o in before["legs"] if o} == {
        "aapl-st": "new", "aapl-ta": "new", "nvda-st": "filled", "nvda-ta": "canceled", "tsla-st": "canceled",
        "tsla-ta": "canceled", "meta-st": "new", "meta-ta": "new"}  # held legs are reported as new
    assert a._orders[a.get_order_by_client_id("meta").id + "-stop_loss"].status == "held"
    assert [p.symbol for p in before["positions"]] == ["AAPL"]
    assert [f.client_order_id for f in before["fills"][0]] == ["aapl", "nvda", "msft", "msft-out", "nvda-st"]
    assert before["fills"][1] == 5
    assert rows_as_book(a.store) == a._orders  # written through: the rows are the book
    a.store.close()

    b = broker(db)  # the restart
    after = book(b, late)
    assert after == before
    assert b._cash() == a._cash()  # bit for bit, not approximately
    # a repeated client order id is the order that exists, not a second one
    again = b.submit_order(OrderRequest("META", "buy", 3, "meta", stop_price=95.0, take_profit_price=105.0), late)
    assert again == before["open"][0] and b.submitted_count == 0
    assert b.close_position("MSFT", "msft-out", late).id == a.get_order_by_client_id("msft-out").id
    assert b.store.scalar("SELECT COUNT(*) FROM sim_orders") == len(a._orders)
    # the restarted broker goes on: META fills and wakes its legs; AAPL's take-profit fires from 14:00
    b.sync(at(DAY, 14, 5))
    assert b.get_order_by_client_id("meta").status == "filled"
    assert b.get_order_by_client_id("aapl-ta").status == "filled"
    assert b.get_order_by_client_id("aapl-st").status == "canceled"
    fills, cursor = b.fills_since(before["fills"][1])
    assert [f.client_order_id for f in fills] == ["meta", "aapl-ta"] and [f.leg for f in fills] == [None, "take_profit"]
    assert cursor == b.store.scalar("SELECT MAX(seq) FROM sim_fills")
    assert rows_as_book(b.store) == b._orders
    assert broker(db)._cash() == b._cash() == b.store.scalar("SELECT cash FROM sim_account")


def test_reads_never_go_back_to_the_tables(tmp_path):
    b = broker(str(tmp_path / "sim.db"))
    seen: list[str] = []
    b.store.conn.set_trace_callback(seen.append)
    b.submit_order(OrderRequest("NVDA", "buy", 5, "nvda", stop_price=99.5, take_profit_price=101.0), T0)
    for minutes in range(0, 90, 5):
        now = T0 + timedelta(minutes=minutes)
        b.sync(now)
        b.get_account(now), b.get_positions(now), b.list_orders(), b.fills_since(0)
        b.get_order_by_client_id("nvda")
    b.close_position("NVDA", "out", T0 + timedelta(minutes=90))
    assert b.get_order_by_client_id("nvda-st").status == "filled"
    assert seen and [s for s in seen if s.lstrip().upper().startswith("SELECT")] == []


FAILS = {  # the last statement of each write fails (a full disk, say): everything before it is rolled back
    "submit": "BEFORE INSERT ON sim_orders WHEN NEW.leg = 'take_profit'",
    "sync": "BEFORE INSERT ON sim_fills",
}


@pytest.mark.parametrize("call", FAILS)
def test_a_failed_write_leaves_the_book_as_the_rows_say(tmp_path, call):
    b = broker(str(tmp_path / "sim.db"))
    b.submit_order(OrderRequest("NVDA", "buy", 5, "nvda", stop_price=99.5, take_profit_price=101.0), T0)
    now = T0 + timedelta(minutes=2)
    before = book(b, now)
    b.store.execute(f"CREATE TEMP TRIGGER boom {FAILS[call]} BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        if call == "submit":
            b.submit_order(OrderRequest("AAPL", "buy", 1, "aapl", stop_price=95.0, take_profit_price=110.0), T0)
        else:
            b.sync(now)  # cash, position, the entry filled, its legs woken: then the fill row fails
    assert book(b, now) == before and b.get_order_by_client_id("aapl") is None
    assert rows_as_book(b.store) == b._orders
    b.store.execute("DROP TRIGGER boom")
    b.sync(now)
    assert b.get_order_by_client_id("nvda").status == "filled" and rows_as_book(b.store) == b._orders
    assert b._cash() == b.store.scalar("SELECT cash FROM sim_account")


def test_orders_it_cannot_fill_are_refused_when_sent(tmp_path):
    b = SimBroker(Store(str(tmp_path / "b.db")), feed(), start_cash=10_000.0, slippage_bps=0.0, fee_per_order=1.0,
                  fee_per_share=0.01)
    # 99 shares at 100 cost 9,900 and pay 1.99: affordable; 100 shares cost 10,000 + 2.00: one fee too many
    ok = b.submit_order(OrderRequest("AAPL", "buy", 99, "cid-ok"), T0)
    assert ok.status == "new"
    b2 = SimBroker(Store(str(tmp_path / "c.db")), feed(), start_cash=10_000.0, slippage_bps=0.0, fee_per_order=1.0,
                   fee_per_share=0.01)
    short = b2.submit_order(OrderRequest("AAPL", "buy", 100, "cid-short"), T0)
    assert (short.status, short.reason) == ("rejected", "insufficient buying power")
    # a sale of more than is held, refused at once (not left open until the next bar)
    sell = b.submit_order(OrderRequest("NVDA", "sell", 1, "cid-sell"), T0)
    assert (sell.status, sell.reason) == ("rejected", "insufficient qty available for order")


def test_a_buy_the_cash_covered_when_sent_but_not_at_the_fill_is_refused(tmp_path):
    # MSFT rises 0.013 a minute: sent at 10:00 against the 9:59 close (101.747), it fills at the 10:00 open (101.76);
    # 98 shares pay 1 + 0.98 = 1.98: 9,973.19 when sent, 9,974.46 at the fill; the cash is 9,974.00
    b = SimBroker(Store(str(tmp_path / "b.db")), feed(), start_cash=9_974.0, slippage_bps=0.0, fee_per_order=1.0,
                  fee_per_share=0.01)
    assert b.submit_order(OrderRequest("MSFT", "buy", 98, "cid-msft"), T0).status == "new"
    b.sync(T0 + timedelta(minutes=2))
    order = b.get_order_by_client_id("cid-msft")
    assert (order.status, order.reason) == ("rejected", "insufficient buying power")
    assert b._cash() == 9_974.0 and b.get_positions(T0 + timedelta(minutes=2)) == []


def test_two_buys_average_their_prices_and_a_leg_sells_only_what_is_held(tmp_path):
    b = SimBroker(Store(str(tmp_path / "b.db")), feed(), start_cash=100_000.0, slippage_bps=0.0, fee_per_order=1.0,
                  fee_per_share=0.01)
    b.submit_order(OrderRequest("MSFT", "buy", 10, "cid-1"), T0)  # fills at the 10:00 open, 101.76
    b.sync(T0 + timedelta(minutes=1))
    b.submit_order(OrderRequest("MSFT", "buy", 20, "cid-2"), T0 + timedelta(minutes=10))  # the 10:10 open, 101.89
    b.sync(T0 + timedelta(minutes=11))
    [pos] = b.get_positions(T0 + timedelta(minutes=11))
    assert pos.qty == 30 and pos.avg_entry_price == pytest.approx((10 * 101.76 + 20 * 101.89) / 30, abs=1e-9)
    # NVDA x10 with a stop at 99.5 (its low touches 99 at 10:30); 4 shares are sold by hand before that
    b.submit_order(OrderRequest("NVDA", "buy", 10, "cid-nvda", stop_price=99.5, take_profit_price=200.0), T0)
    b.sync(T0 + timedelta(minutes=1))
    b.submit_order(OrderRequest("NVDA", "sell", 4, "cid-part"), T0 + timedelta(minutes=5))
    b.sync(T0 + timedelta(minutes=6))
    b.sync(at(DAY, 10, 45))
    fills, _ = b.fills_since(0)
    stop = [f for f in fills if f.leg == "stop_loss"]
    assert [(f.qty, f.price, f.fee) for f in stop] == [(6, 99.5, pytest.approx(1.06))]  # the 6 left, not 10
    assert "NVDA" not in {p.symbol for p in b.get_positions(at(DAY, 10, 45))}


def test_closing_a_position_cancels_its_legs_in_the_book(tmp_path):
    b = SimBroker(Store(str(tmp_path / "b.db")), feed(), start_cash=100_000.0, slippage_bps=0.0)
    b.submit_order(OrderRequest("NVDA", "buy", 10, "cid-nvda", stop_price=99.5, take_profit_price=200.0), T0)
    b.sync(T0 + timedelta(minutes=1))
    b.close_position("NVDA", "cid-close", T0 + timedelta(minutes=5))
    assert [b.get_order_by_client_id(f"cid-nvda-{x}").status for x in ("st", "ta")] == ["canceled", "canceled"]
    b.sync(at(DAY, 10, 45))  # past NVDA's dip through 99.5: no stop fires on a closed position
    fills, _ = b.fills_since(0)
    assert [(f.side, f.qty, f.leg) for f in fills] == [("buy", 10, None), ("sell", 10, None)]
    assert b._cash() == pytest.approx(100_000.0)  # bought and sold at 100, no fee, no slippage
