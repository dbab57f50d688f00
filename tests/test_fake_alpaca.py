"""The Alpaca-shaped test server answers what the real alpaca-py clients parse, and fails as configured."""

from __future__ import annotations

import functools
import threading
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, QueryOrderStatus
from alpaca.trading.models import Calendar, Clock, Order, Position, TradeAccount
from alpaca.trading.requests import (
    GetCalendarRequest,
    GetOrdersRequest,
    MarketOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)

from core.clock import UTC
from core.feed import MarketFeed
from core.state.store import Store
from core.strategy import load_strategy
from core.universe import DEFAULT_UNIVERSE
from core.venues.broker import OrderRequest
from core.venues.sim.broker import SimBroker
from core.venues.sim.synthetic import SyntheticMarket
from tests.fakes.alpaca_server import FakeAlpaca

NY = ZoneInfo("America/New_York")
T0 = datetime(2025, 3, 4, 15, 0, 30, tzinfo=UTC)  # 10:00:30 New York, inside the session (EST)
SYMBOLS = DEFAULT_UNIVERSE.all_symbols
KEY, SECRET = "test-key", "test-secret"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=5, anchor=date(2025, 3, 3))  # deterministic whatever the request order


@pytest.fixture
def fake(market: SyntheticMarket):
    with FakeAlpaca(market, universe_symbols=SYMBOLS) as f:
        f.set_time(T0)
        yield f
        assert f.errors == []  # no exception inside the fake went unnoticed


def trading(fake: FakeAlpaca, *, retry: int = 0, timeout: float = 5.0, secret: str = SECRET) -> TradingClient:
    client = TradingClient(KEY, secret, paper=True, url_override=fake.url)
    client._retry = retry
    client._retry_wait = 0  # alpaca-py would block 3 s per retry
    client._session.request = functools.partial(client._session.request, timeout=timeout)  # type: ignore[method-assign]
    return client


def data_client(fake: FakeAlpaca, key: str = KEY) -> StockHistoricalDataClient:
    client = StockHistoricalDataClient(key, SECRET, url_override=fake.url)
    client._retry = 0
    client._session.request = functools.partial(client._session.request, timeout=5.0)  # type: ignore[method-assign]
    return client


def buy(symbol: str, qty: float, cid: str, *, tp: float | None = None, stop: float | None = None) -> MarketOrderRequest:
    kw = {}
    if tp is not None and stop is not None:
        kw = {"order_class": OrderClass.BRACKET, "take_profit": TakeProfitRequest(limit_price=round(tp, 2)),
              "stop_loss": StopLossRequest(stop_price=round(stop, 2))}
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force="day", client_order_id=cid,
                              **kw)


def sell(symbol: str, qty: float, cid: str) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.SELL, time_in_force="day", client_order_id=cid)


def bar(market: SyntheticMarket, symbol: str, ts: datetime) -> dict:
    df = market.bars([symbol], ts, ts + timedelta(minutes=1))
    assert len(df) == 1
    return df.iloc[0].to_dict()


def api_error(excinfo: pytest.ExceptionInfo[APIError]) -> tuple[int | None, int, str]:
    e = excinfo.value
    return e.status_code, e.code, e.message


# ---------------------------------------------------------------- orders
def test_market_order_fills_at_next_bar_open_with_slippage(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    o = client.submit_order(buy("AAPL", 10, "m1"))
    assert isinstance(o, Order) and isinstance(o.id, uuid.UUID)
    assert (o.status, o.qty, o.filled_qty, o.order_class, o.legs) == (OrderStatus.NEW, "10", "0", OrderClass.SIMPLE,
                                                                      None)
    assert client.get_order_by_client_id("m1").id == o.id
    fake.set_time(datetime(2025, 3, 4, 15, 0, 59, tzinfo=UTC))
    assert client.get_order_by_id(o.id).status == OrderStatus.NEW  # the 15:01 bar has not opened yet
    fake.set_time(datetime(2025, 3, 4, 15, 1, 0, tzinfo=UTC))
    got = client.get_order_by_id(o.id)
    expected = bar(market, "AAPL", datetime(2025, 3, 4, 15, 1, tzinfo=UTC))["open"] * (1 + 2 / 10_000)
    assert got.status == OrderStatus.FILLED and got.filled_qty == "10"
    assert float(got.filled_avg_price) == pytest.approx(expected, abs=1e-5)
    assert got.filled_at == datetime(2025, 3, 4, 15, 1, tzinfo=UTC)
    pos = client.get_open_position("AAPL")
    assert isinstance(pos, Position) and pos.qty == "10" and pos.side == "long"
    assert float(pos.avg_entry_price) == pytest.approx(expected, abs=1e-5)
    acct = client.get_account()
    assert float(acct.cash) == pytest.approx(100_000 - 10 * expected, abs=1e-4)
    assert fake.orders_created == 1 and fake.sim.submitted_count == 1


def test_bracket_legs_nested_and_flat(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    base = bar(market, "AAPL", datetime(2025, 3, 4, 14, 59, tzinfo=UTC))["close"]
    o = client.submit_order(buy("AAPL", 10, "b1", tp=base * 1.05, stop=base * 0.95))
    assert o.order_class == OrderClass.BRACKET and len(o.legs) == 2
    by_type = {leg.type: leg for leg in o.legs}
    assert set(by_type) == {OrderType.LIMIT, OrderType.STOP}
    assert by_type[OrderType.LIMIT].limit_price == f"{round(base * 1.05, 2):g}"
    assert by_type[OrderType.STOP].stop_price == f"{round(base * 0.95, 2):g}"
    assert {leg.status for leg in o.legs} == {OrderStatus.HELD}
    assert {leg.client_order_id for leg in o.legs} == {"b1-ta", "b1-st"}  # whatever SimBroker stored
    leg_ids = {leg.id for leg in o.legs}
    assert all(isinstance(i, uuid.UUID) for i in leg_ids) and o.id not in leg_ids

    nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    assert [x.id for x in nested] == [o.id] and {leg.id for leg in nested[0].legs} == leg_ids
    flat = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert {x.id for x in flat} == leg_ids | {o.id} and all(x.legs is None for x in flat)
    leg = client.get_order_by_id(next(iter(leg_ids)))
    assert leg.id in leg_ids and leg.order_class == OrderClass.BRACKET and leg.side == OrderSide.SELL

    fake.advance(90)  # the entry fills at the 15:01 open; its legs wake up
    parent = client.get_order_by_client_id("b1")
    assert parent.status == OrderStatus.FILLED and {x.status for x in parent.legs} == {OrderStatus.NEW}
    open_nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True))
    assert [x.id for x in open_nested] == [o.id]  # a filled parent with open legs is rolled up
    open_flat = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert {x.id for x in open_flat} == leg_ids
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))[0].id == o.id
    assert client.get_open_position("AAPL").qty_available == "0"  # the legs hold the shares


def test_bracket_fills_exactly_like_simbroker(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    base = bar(market, "NVDA", datetime(2025, 3, 4, 14, 59, tzinfo=UTC))["close"]
    tp, stop = round(base * 1.002, 2), round(base * 0.998, 2)
    client.submit_order(buy("NVDA", 7, "twin", tp=tp, stop=stop))
    ref_feed = MarketFeed(market, load_strategy("core.strategy:MomentumVwapStrategy"), SYMBOLS)
    ref = SimBroker(Store(":memory:"), ref_feed, start_cash=100_000.0, slippage_bps=2.0)
    ref_feed.ensure(T0)
    ref.submit_order(OrderRequest("NVDA", "buy", 7, "twin", stop_price=stop, take_profit_price=tp), T0)
    for minutes in (3, 20, 60, 240, 360):  # the fake is polled along the way, the reference only at the end
        fake.set_time(T0 + timedelta(minutes=minutes))
        client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    end = T0 + timedelta(minutes=360)
    ref_feed.ensure(end)
    ref.sync(end)
    got = client.get_order_by_client_id("twin")
    legs = {x.client_order_id: x for x in got.legs}
    ref_rows = {r["client_order_id"]: r for r in ref.store.query("SELECT * FROM sim_orders")}
    assert float(got.filled_avg_price) == pytest.approx(ref_rows["twin"]["filled_avg_price"], abs=1e-5)
    assert {cid: x.status.value for cid, x in legs.items()} == {cid: ref_rows[cid]["status"] for cid in legs}
    assert sorted(x.status.value for x in legs.values()) == ["canceled", "filled"]  # one leg fired (OCO)
    for cid, x in legs.items():
        if x.status == OrderStatus.FILLED:
            assert float(x.filled_avg_price) == pytest.approx(ref_rows[cid]["filled_avg_price"], abs=1e-5)
    assert float(client.get_account().cash) == pytest.approx(ref._cash(), abs=1e-4)


def test_cancel_order(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    base = bar(market, "MSFT", datetime(2025, 3, 4, 14, 59, tzinfo=UTC))["close"]
    o = client.submit_order(buy("MSFT", 2, "c1", tp=base * 1.1, stop=base * 0.9))
    assert client.cancel_order_by_id(o.id) is None  # 204, empty body
    got = client.get_order_by_id(o.id)
    assert got.status == OrderStatus.CANCELED and got.canceled_at is not None
    assert {leg.status for leg in got.legs} == {OrderStatus.CANCELED}
    with pytest.raises(APIError) as e:
        client.cancel_order_by_id(o.id)
    assert api_error(e) == (422, 42210000, "order is not cancelable")
    with pytest.raises(APIError) as e:
        client.cancel_order_by_id(uuid.uuid4())
    assert api_error(e) == (404, 40410000, "order not found")
    with pytest.raises(APIError) as e:
        client.get_order_by_client_id("nope")
    assert api_error(e) == (404, 40410000, "order not found")
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True)) == []
    fake.advance(300)
    assert client.get_all_positions() == []  # a canceled order never fills


def test_order_sent_before_the_open_is_accepted_then_fills_at_the_open(fake: FakeAlpaca,
                                                                       market: SyntheticMarket) -> None:
    client = trading(fake)
    fake.set_time(datetime(2025, 3, 5, 13, 0, tzinfo=UTC))  # 08:00 New York
    o = client.submit_order(buy("QQQ", 2, "pre"))
    assert o.status == OrderStatus.ACCEPTED
    assert [x.id for x in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))] == [o.id]
    fake.set_time(datetime(2025, 3, 5, 14, 30, 5, tzinfo=UTC))
    got = client.get_order_by_id(o.id)
    first_open = bar(market, "QQQ", datetime(2025, 3, 5, 14, 30, tzinfo=UTC))["open"]
    assert got.status == OrderStatus.FILLED and got.filled_at == datetime(2025, 3, 5, 14, 30, tzinfo=UTC)
    assert float(got.filled_avg_price) == pytest.approx(first_open * (1 + 2 / 10_000), abs=1e-5)


def test_duplicate_client_order_id_is_422(fake: FakeAlpaca) -> None:
    client = trading(fake)
    first = client.submit_order(buy("AAPL", 1, "dup"))
    with pytest.raises(APIError) as e:
        client.submit_order(buy("AAPL", 1, "dup"))
    assert api_error(e) == (422, 40010001, "client_order_id must be unique")
    assert (fake.order_posts, fake.orders_created) == (2, 1)
    assert [o.id for o in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))] == [first.id]


def test_orders_list_filters_and_order(fake: FakeAlpaca) -> None:
    client = trading(fake)
    ids = []
    for i, sym in enumerate(("AAPL", "MSFT", "AMD")):
        ids.append(client.submit_order(buy(sym, 1, f"f{i}")).id)
        fake.advance(1)
    listed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=2))
    assert [o.id for o in listed] == [ids[2], ids[1]]  # newest first, limited
    asc = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc"))
    assert [o.id for o in asc] == ids
    only = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["AMD", "AAPL"]))
    assert {o.symbol for o in only} == {"AMD", "AAPL"}
    after = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, after=T0))  # exclusive
    assert [o.id for o in after] == [ids[2], ids[1]]
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED)) == []


# ---------------------------------------------------------------- rejections
def test_simulator_rejections_are_http_errors_not_orders(fake: FakeAlpaca) -> None:
    client = trading(fake)
    with pytest.raises(APIError) as e:
        client.submit_order(buy("AAPL", 10_000, "big"))
    assert api_error(e) == (403, 40310000, "insufficient buying power")
    with pytest.raises(APIError) as e:
        client.submit_order(sell("TSLA", 5, "naked"))
    assert api_error(e) == (403, 40310000, "insufficient qty available for order")
    with pytest.raises(APIError):
        client.get_order_by_client_id("big")
    assert fake.orders_created == 0 and fake.sim.submitted_count == 0
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL)) == []
    assert client.submit_order(buy("AAPL", 1, "big")).client_order_id == "big"  # the id was not used up


def test_sell_of_shares_held_by_bracket_legs_is_rejected(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    base = bar(market, "AMD", datetime(2025, 3, 4, 14, 59, tzinfo=UTC))["close"]
    client.submit_order(buy("AMD", 4, "e1", tp=base * 1.2, stop=base * 0.8))
    fake.advance(60)
    assert client.get_open_position("AMD").qty == "4"
    with pytest.raises(APIError) as e:
        client.submit_order(sell("AMD", 4, "x1"))
    assert api_error(e) == (403, 40310000, "insufficient qty available for order")
    for leg in client.get_order_by_client_id("e1").legs:
        client.cancel_order_by_id(leg.id)
    assert client.submit_order(sell("AMD", 4, "x1")).status == OrderStatus.NEW


@pytest.mark.parametrize(("kind", "status", "code", "message"), [
    ("reject_buying_power", 403, 40310000, "insufficient buying power"),
    ("reject_wash_trade", 403, 40310000, "potential wash trade detected. use complex orders"),
    ("reject_halted", 422, 42210000, "asset SOXS is not tradable"),
])
def test_injected_rejections(fake: FakeAlpaca, kind: str, status: int, code: int, message: str) -> None:
    client = trading(fake)
    fake.inject(kind)
    assert client.get_account().status == "ACTIVE"  # a GET does not consume an order rejection
    with pytest.raises(APIError) as e:
        client.submit_order(buy("SOXS", 3, "r1"))
    assert api_error(e) == (status, code, message)
    assert fake.orders_created == 0 and fake.pending_faults == []
    assert client.submit_order(buy("SOXS", 3, "r1")).status == OrderStatus.NEW  # only once


def test_invalid_order_bodies(fake: FakeAlpaca) -> None:
    bodies = [
        {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day", "limit_price": 1},
        {"symbol": "ZZZZ", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"},
        {"symbol": "AAPL", "qty": 1.5, "side": "buy", "type": "market", "time_in_force": "day"},
        {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day",
         "client_order_id": "x" * 129},
        {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day",
         "order_class": "bracket", "take_profit": {"limit_price": 1.0}, "stop_loss": {"stop_price": 0.5}},
    ]
    for body in bodies:
        r = requests.post(f"{fake.url}/v2/orders", json=body, headers=AUTH, timeout=5)
        assert r.status_code == 422, body
        assert set(r.json()) == {"code", "message"}
    assert fake.orders_created == 0


# ---------------------------------------------------------------- account, positions
def test_account_shape_and_last_equity(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    acct = client.get_account()
    assert isinstance(acct, TradeAccount) and isinstance(acct.id, uuid.UUID)
    assert (acct.account_number, acct.status, acct.currency) == ("PA1234567", "ACTIVE", "USD")
    assert acct.cash == acct.buying_power == acct.equity == acct.portfolio_value == acct.last_equity == "100000"
    client.submit_order(buy("AAPL", 10, "le"))
    fake.advance(60)
    assert client.get_account().last_equity == "100000"  # same NY day
    fake.set_time(datetime(2025, 3, 5, 15, 0, tzinfo=UTC))
    acct = client.get_account()
    prev_close = bar(market, "AAPL", datetime(2025, 3, 4, 20, 59, tzinfo=UTC))["close"]
    assert float(acct.last_equity) == pytest.approx(float(acct.cash) + 10 * prev_close, abs=1e-4)
    assert float(acct.equity) != pytest.approx(float(acct.last_equity), abs=1e-6)


def test_positions_404_and_close_position(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    with pytest.raises(APIError) as e:
        client.get_open_position("TSLA")
    assert api_error(e) == (404, 40410000, "position does not exist")
    with pytest.raises(APIError) as e:
        client.close_position("TSLA")
    assert e.value.status_code == 404
    fake.open_position("MSFT", 5, 490.0)
    pos = client.get_open_position("MSFT")
    assert (pos.qty, pos.avg_entry_price, pos.exchange, pos.asset_class) == ("5", "490", "NASDAQ", "us_equity")
    assert [p.symbol for p in client.get_all_positions()] == ["MSFT"]
    o = client.close_position("MSFT")
    assert isinstance(o, Order) and (o.side, o.qty, o.type, o.status) == (OrderSide.SELL, "5", OrderType.MARKET,
                                                                          OrderStatus.NEW)
    assert o.client_order_id  # generated by the broker
    with pytest.raises(APIError) as e:
        client.close_position("MSFT")  # the first close is still pending: no second sell
    assert api_error(e) == (403, 40310000, "insufficient qty available for order")
    fake.advance(60)
    assert client.get_all_positions() == []
    fill = bar(market, "MSFT", datetime(2025, 3, 4, 15, 1, tzinfo=UTC))["open"] * (1 - 2 / 10_000)
    assert client.get_order_by_id(o.id).status == OrderStatus.FILLED
    assert float(client.get_account().cash) == pytest.approx(100_000 - 5 * 490.0 + 5 * fill, abs=1e-4)


def test_foreign_position_and_order_for_reconciliation(fake: FakeAlpaca) -> None:
    client = trading(fake)
    fake.open_position("NVDA", 20, 180.0)
    oid = fake.add_foreign_order("NVDA", "sell", 5, client_order_id="someone-else")
    with pytest.raises(ValueError):
        fake.add_foreign_order("NVDA", 5, "sell")  # type: ignore[arg-type]
    assert (fake.orders_created, fake.order_posts) == (1, 0)  # it exists at the broker; the app never sent it
    fake.advance(600)
    open_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True))
    assert [(str(o.id), o.client_order_id, o.type, o.status) for o in open_orders] == [
        (oid, "someone-else", OrderType.LIMIT, OrderStatus.NEW)]
    assert client.get_open_position("NVDA").qty_available == "15"
    client.cancel_order_by_id(oid)
    assert client.get_order_by_client_id("someone-else").status == OrderStatus.CANCELED
    assert client.get_open_position("NVDA").qty == "20"


# ---------------------------------------------------------------- clock, calendar
def test_clock_and_calendar(fake: FakeAlpaca) -> None:
    client = trading(fake)
    clock = client.get_clock()
    assert isinstance(clock, Clock) and clock.is_open
    assert clock.timestamp == T0 and clock.timestamp.utcoffset() == timedelta(hours=-5)
    assert clock.next_close == datetime(2025, 3, 4, 16, 0, tzinfo=NY)
    assert clock.next_open == datetime(2025, 3, 5, 9, 30, tzinfo=NY)
    fake.set_time(datetime(2025, 3, 7, 22, 0, tzinfo=UTC))  # Friday after the close; DST starts on Sunday
    clock = client.get_clock()
    assert not clock.is_open
    assert clock.next_open == datetime(2025, 3, 10, 9, 30, tzinfo=NY)
    assert clock.next_open.utcoffset() == timedelta(hours=-4)
    cal = client.get_calendar(GetCalendarRequest(start=date(2025, 7, 1), end=date(2025, 7, 8)))
    assert all(isinstance(c, Calendar) for c in cal)
    assert [(c.date.isoformat(), c.open.strftime("%H:%M"), c.close.strftime("%H:%M")) for c in cal] == [
        ("2025-07-01", "09:30", "16:00"), ("2025-07-02", "09:30", "16:00"), ("2025-07-03", "09:30", "13:00"),
        ("2025-07-07", "09:30", "16:00"), ("2025-07-08", "09:30", "16:00")]


# ---------------------------------------------------------------- market data
def test_bars_paginate_and_never_show_an_unclosed_minute(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    fake.max_bars_page = 250  # the server cuts pages; alpaca-py follows next_page_token
    client = data_client(fake)
    req = StockBarsRequest(symbol_or_symbols=["AAPL", "MSFT", "QQQ"], timeframe=TimeFrame.Minute,
                           start=datetime(2025, 3, 3, tzinfo=UTC), end=datetime(2025, 3, 6, tzinfo=UTC), feed="iex")
    df = client.get_stock_bars(req).df
    per_symbol = 390 + 30  # all of Monday + 14:30..14:59 UTC on Tuesday (the 15:00 bar closes at 15:01)
    assert len(df) == 3 * per_symbol
    assert fake.count("GET", "/v2/stocks/bars") == -(-3 * per_symbol // 250)
    ts = df.index.get_level_values("timestamp")
    assert ts.max() == datetime(2025, 3, 4, 14, 59, tzinfo=UTC)
    assert all(t + timedelta(seconds=60) <= T0 for t in ts)
    ref = market.bars(["AAPL", "MSFT", "QQQ"], datetime(2025, 3, 3, tzinfo=UTC), datetime(2025, 3, 4, 15, tzinfo=UTC))
    ref = ref.set_index(["symbol", "timestamp"]).sort_index()
    assert list(df.index) == list(ref.index)
    assert df["close"].to_numpy() == pytest.approx(ref["close"].to_numpy(), abs=1e-4)
    assert df["volume"].to_numpy() == pytest.approx(ref["volume"].to_numpy())

    fake.set_time(datetime(2025, 3, 4, 15, 0, 59, 999_000, tzinfo=UTC))
    assert client.get_stock_bars(req).df.index.get_level_values("timestamp").max().minute == 59
    fake.set_time(datetime(2025, 3, 4, 15, 1, tzinfo=UTC))
    assert client.get_stock_bars(req).df.index.get_level_values("timestamp").max() == datetime(2025, 3, 4, 15, 0,
                                                                                                tzinfo=UTC)
    limited = StockBarsRequest(symbol_or_symbols=["AAPL", "MSFT"], timeframe=TimeFrame.Minute,
                               start=datetime(2025, 3, 3, tzinfo=UTC), limit=600)
    assert len(client.get_stock_bars(limited).df) == 600


def test_bars_wire_format(fake: FakeAlpaca) -> None:
    url = f"{fake.url}/v2/stocks/bars"
    params = {"symbols": "AAPL,ZZZZ,SOXS", "timeframe": "1Min", "start": "2025-03-04T14:30:00Z",
              "end": "2025-03-04T16:00:00Z", "feed": "iex", "limit": "40"}
    r = requests.get(url, params=params, headers=AUTH, timeout=5)
    assert r.status_code == 200 and r.headers["X-Ratelimit-Limit"] == "200"
    page1 = r.json()
    # one limit across symbols, symbol by symbol: AAPL's 30 closed bars, then the first 10 of SOXS; ZZZZ omitted
    assert {k: len(v) for k, v in page1["bars"].items()} == {"AAPL": 30, "SOXS": 10}
    assert isinstance(page1["next_page_token"], str)
    first = page1["bars"]["AAPL"][0]
    assert set(first) == {"t", "o", "h", "l", "c", "v", "n", "vw"} and first["t"] == "2025-03-04T14:30:00Z"
    page2 = requests.get(url, params={**params, "page_token": page1["next_page_token"]}, headers=AUTH,
                         timeout=5).json()
    assert page2["next_page_token"] is None and {k: len(v) for k, v in page2["bars"].items()} == {"SOXS": 20}
    assert [b["t"] for b in page2["bars"]["SOXS"]][-1] == "2025-03-04T14:59:00Z"
    assert all(v for v in page2["bars"].values())  # never "SYM": null or []
    future = requests.get(url, params={**params, "start": "2025-03-04T15:00:00Z"}, headers=AUTH, timeout=5).json()
    assert future == {"bars": {}, "next_page_token": None}
    assert requests.get(url, params={**params, "limit": "10001"}, headers=AUTH, timeout=5).status_code == 400
    bad = requests.get(url, params={**params, "page_token": "%%%"}, headers=AUTH, timeout=5)
    assert bad.status_code == 400 and "message" in bad.json()


# ---------------------------------------------------------------- auth, rate limit, transport faults
def test_wrong_keys_are_401(fake: FakeAlpaca) -> None:
    with pytest.raises(APIError) as e:
        trading(fake, secret="wrong").get_account()
    assert api_error(e) == (401, 40110000, "request is not authorized")
    req = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=datetime(2025, 3, 4, tzinfo=UTC))
    with pytest.raises(APIError) as e:
        data_client(fake, key="wrong").get_stock_bars(req)
    assert e.value.status_code == 401
    r = requests.get(f"{fake.url}/v2/account", timeout=5)
    assert r.status_code == 401 and r.headers["X-Ratelimit-Limit"] == "200"


def test_rate_limit_per_wall_clock_minute(market: SyntheticMarket) -> None:
    with FakeAlpaca(market, universe_symbols=SYMBOLS, rate_limit_per_min=3) as fake:
        fake.set_time(T0)
        wall = [6010.0]
        fake.wall_time = lambda: wall[0]
        remaining = []
        for _ in range(3):
            r = requests.get(f"{fake.url}/v2/clock", headers=AUTH, timeout=5)
            assert r.status_code == 200 and r.headers["X-Ratelimit-Reset"] == "6060"
            remaining.append(r.headers["X-Ratelimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        r = requests.get(f"{fake.url}/v2/clock", headers=AUTH, timeout=5)
        assert r.status_code == 429 and r.json() == {"code": 42910000, "message": "rate limit exceeded"}
        assert r.headers["Retry-After"] == "50"
        bars = requests.get(f"{fake.url}/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": "1Min"},
                            headers=AUTH, timeout=5)
        assert bars.status_code == 200  # market data has its own budget
        wall[0] = 6060.0
        assert requests.get(f"{fake.url}/v2/clock", headers=AUTH, timeout=5).status_code == 200


def test_injected_429_and_alpaca_py_retry(fake: FakeAlpaca) -> None:
    fake.inject("429", retry_after=7)
    r = requests.get(f"{fake.url}/v2/account", headers=AUTH, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7" and r.json()["code"] == 42910000
    assert r.headers["X-Ratelimit-Remaining"] == "0"
    assert requests.get(f"{fake.url}/v2/account", headers=AUTH, timeout=5).status_code == 200
    fake.inject("429", path="/v2/account", times=2)
    before = fake.count("GET", "/v2/account")
    assert trading(fake, retry=3).get_account().status == "ACTIVE"  # alpaca-py retries 429 by itself
    assert fake.count("GET", "/v2/account") - before == 3


def test_injected_fault_after_some_requests(fake: FakeAlpaca) -> None:
    fake.inject("500", path="/v2/clock", after=2, times=2)
    fake.inject("503", path="/v2/account")  # a later fault still matches while the first waits its turn
    assert requests.get(f"{fake.url}/v2/account", headers=AUTH, timeout=5).status_code == 503
    statuses = [requests.get(f"{fake.url}/v2/clock", headers=AUTH, timeout=5).status_code for _ in range(5)]
    assert statuses == [200, 200, 500, 500, 200]
    assert fake.pending_faults == []
    with pytest.raises(ValueError, match="after"):
        fake.inject("500", after=-1)


@pytest.mark.parametrize(("kind", "code"), [("500", 50010000), ("503", 50310000), ("504", 50410000)])
def test_injected_server_errors(fake: FakeAlpaca, kind: str, code: int) -> None:
    client = trading(fake)
    fake.inject(kind, path="/v2/positions")
    assert client.get_account().status == "ACTIVE"  # another path: unaffected
    with pytest.raises(APIError) as e:
        client.get_all_positions()
    assert (e.value.status_code, e.value.code) == (int(kind), code)
    assert client.get_all_positions() == []


def test_504_after_processing_makes_alpaca_py_retry_hit_duplicate(fake: FakeAlpaca) -> None:
    fake.inject("504", method="POST", path="/v2/orders", processed=True)
    client = trading(fake, retry=3)  # alpaca-py's default policy retries 504 even for POST
    with pytest.raises(APIError) as e:
        client.submit_order(buy("AAPL", 1, "g1"))
    assert api_error(e) == (422, 40010001, "client_order_id must be unique")
    assert (fake.order_posts, fake.orders_created) == (2, 1)
    assert client.get_order_by_client_id("g1").qty == "1"


def test_drop_closes_the_connection_without_an_answer(fake: FakeAlpaca) -> None:
    client = trading(fake)
    assert client.get_clock().is_open  # the next request goes over a reused keep-alive connection
    fake.inject("drop", path="/v2/account")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get_account()
    assert client.get_account().status == "ACTIVE"
    fake.inject("drop", method="POST")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.submit_order(buy("AAPL", 1, "d1"))
    assert fake.orders_created == 0  # dropped before processing


def test_slow_answer_times_out_the_client(fake: FakeAlpaca) -> None:
    """The client gives up on an answer that does not come, and the server serves others meanwhile.

    The slow answer is held until the test releases it (not a sleep a busy machine could outlast), so
    neither assertion depends on how fast this machine is.
    """
    release = threading.Event()
    client = trading(fake, timeout=0.3)
    fake.inject("slow", path="/v2/clock", until=release, seconds=60)
    try:
        with pytest.raises(requests.exceptions.Timeout):
            client.get_clock()  # the server holds this answer until ``release``: only the timeout can end it
        assert not release.is_set()
        assert trading(fake).get_clock().is_open  # served while the slow request is still held
        assert fake.count("GET", "/v2/clock") == 2
    finally:
        release.set()


def test_lost_response_creates_exactly_one_order(fake: FakeAlpaca) -> None:
    client = trading(fake)
    fake.inject("lost_response")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.submit_order(buy("AAPL", 3, "lost1"))
    assert (fake.order_posts, fake.orders_created) == (1, 1)
    found = client.get_order_by_client_id("lost1")
    assert found.qty == "3"
    with pytest.raises(APIError) as e:
        client.submit_order(buy("AAPL", 3, "lost1"))
    assert e.value.code == 40010001
    assert [o.id for o in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))] == [found.id]


def test_partial_fill_then_filled(fake: FakeAlpaca, market: SyntheticMarket) -> None:
    client = trading(fake)
    fake.inject("partial_fill", seconds=60)
    o = client.submit_order(buy("AAPL", 11, "p1"))  # fills at the 15:01 open
    other = client.submit_order(buy("MSFT", 4, "p2"))
    price = bar(market, "AAPL", datetime(2025, 3, 4, 15, 1, tzinfo=UTC))["open"] * (1 + 2 / 10_000)
    fake.set_time(datetime(2025, 3, 4, 15, 1, 10, tzinfo=UTC))
    got = client.get_order_by_id(o.id)
    assert (got.status, got.filled_qty, got.filled_at) == (OrderStatus.PARTIALLY_FILLED, "5", None)
    assert float(got.filled_avg_price) == pytest.approx(price, abs=1e-5)
    assert client.get_open_position("AAPL").qty == "5"
    assert [x.id for x in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))] == [o.id]
    assert client.get_order_by_id(other.id).status == OrderStatus.FILLED  # only one order was partial
    fake.set_time(datetime(2025, 3, 4, 15, 2, 9, tzinfo=UTC))  # 60 s from the first answer that saw the fill
    assert client.get_order_by_id(o.id).status == OrderStatus.PARTIALLY_FILLED
    fake.set_time(datetime(2025, 3, 4, 15, 2, 10, tzinfo=UTC))
    got = client.get_order_by_id(o.id)
    assert (got.status, got.filled_qty) == (OrderStatus.FILLED, "11")
    assert float(got.filled_avg_price) == pytest.approx(price, abs=1e-5)
    assert client.get_open_position("AAPL").qty == "11"


def test_request_log_keeps_no_secrets_and_server_is_quiet(fake: FakeAlpaca, capfd: pytest.CaptureFixture) -> None:
    client = trading(fake)
    client.get_account()
    fake.inject("500")
    with pytest.raises(APIError):
        client.get_clock()
    requests.get(f"{fake.url}/v2/nowhere", headers=AUTH, timeout=5)
    assert fake.requests == [("GET", "/v2/account"), ("GET", "/v2/clock"), ("GET", "/v2/nowhere")]
    assert SECRET not in repr(fake.requests) and KEY not in repr(fake.requests) and fake.count("GET", "/v2/") == 3
    out, err = capfd.readouterr()
    assert out == "" and err == ""
