"""The Alpaca adapters through the real alpaca-py clients against the Alpaca-shaped server on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from core.clock import NY, UTC, SimClock
from core.config import ConfigError, load_settings
from core.engine.intents import new_intent, save_intent, set_intent_status, submit_intent
from core.runtime import Runtime
from core.venues.alpaca.broker import RequestBudget
from core.venues.sim.synthetic import SyntheticMarket
from tests.fakes.alpaca_server import FakeAlpaca

ANCHOR = date(2025, 3, 3)
DAY = date(2025, 3, 4)
KEY, SECRET = "PKCANARY0123456789", "SECRETCANARY9876543210"


def ny(hh: int, mm: int, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY).astimezone(UTC)


@pytest.fixture
def fake():
    market = SyntheticMarket(5, anchor=ANCHOR)
    # the server's own 200/min limit runs on wall time; a replay squeezes a session into seconds
    srv = FakeAlpaca(market, universe_symbols=list(market.symbols), api_key=KEY, secret_key=SECRET,
                     rate_limit_per_min=1_000_000).start()
    srv.set_time(ny(9, 31))
    yield srv
    srv.stop()


def settings_for(tmp_path: Path, fake: FakeAlpaca | None, *, name: str = "a.db", **kw):
    # the bar cache in the test's folder: a live Alpaca feed keeps every bar it receives (core/venues/alpaca/bar_cache)
    base = {"db_path": str(tmp_path / name), "engine_jobs": False, "seed": 5,
            "alpaca_cache_dir": str(tmp_path / "cache")}
    if fake is not None:
        base.update(broker="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET, alpaca_base_url=fake.url,
                    alpaca_data_url=fake.url, alpaca_timeout_s=2.0, alpaca_max_retries=2,  # a busy machine stays in
                    alpaca_bar_grace_s=0)  # the local server publishes a bar the instant its minute ends
    base.update(kw)
    return load_settings(**base)


def runtime(settings, start: datetime) -> Runtime:
    rt = Runtime(settings, today=DAY + timedelta(days=1))
    rt.clock = SimClock(start)
    return rt


def drive(rt: Runtime, fake: FakeAlpaca | None, until: datetime, step_s: int = 30) -> None:
    t = rt.clock.now()
    while t < until:
        t = min(until, t + timedelta(seconds=step_s))
        rt.clock.set(t)
        if fake is not None:
            fake.set_time(t)
        rt.run_tick()


def trades(rt: Runtime) -> list[tuple]:
    return [(r["symbol"], r["qty"], round(r["entry_price"], 4), round(r["exit_price"], 4), r["exit_reason"])
            for r in rt.store.query("SELECT * FROM trades ORDER BY exit_ts, symbol")]


# ---------------------------------------------------------------- a whole session


_SIM_SESSION: dict[datetime, list[tuple]] = {}


@pytest.mark.parametrize("market_data", ["synthetic", "alpaca"])
def test_full_session_matches_the_simulated_broker(tmp_path, fake, market_data):
    end = ny(15, 59)
    expected = _SIM_SESSION.get(end)
    if expected is None:  # the simulated broker's session, the same for both market data sources: run once
        sim = runtime(settings_for(tmp_path, None, name="sim.db", auto_mode=True), ny(9, 31))
        drive(sim, None, end)
        expected = _SIM_SESSION[end] = trades(sim)
        sim.stop()
    rt = runtime(settings_for(tmp_path, fake, auto_mode=True, market_data=market_data), ny(9, 31))
    drive(rt, fake, end)
    got = trades(rt)
    assert len(expected) >= 3 and {t[4] for t in expected} & {"stop_loss", "take_profit"}
    assert got == expected
    # one order at the broker per order we recorded, nothing sent twice
    ours = rt.store.scalar("SELECT COUNT(*) FROM orders")
    assert fake.orders_created == ours and fake.order_posts == ours
    if market_data == "alpaca":
        assert fake.count("GET", "/v2/stocks/bars") >= 1
        # the live feed asked only for bars that had closed: no scoring from the future
        assert rt.engine.feed.ts[-1] + 60 <= end.timestamp()
    rt.stop()


def test_approve_then_fill_then_stop_out(tmp_path, fake):
    rt = runtime(settings_for(tmp_path, fake), ny(9, 31))
    t = rt.clock.now()
    for _ in range(300):
        if rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending' AND kind='entry'"):
            break
        t += timedelta(seconds=30)
        drive(rt, fake, t)
    intent = rt.store.one("SELECT * FROM intents WHERE status='pending' AND kind='entry' LIMIT 1")
    assert intent is not None
    assert rt.send_command("approve", {"intent_id": intent["id"]})["result"].startswith(
        f"submitted: BUY {intent['qty']:g} {intent['symbol']} at ~$")
    assert rt.send_command("approve", {"intent_id": intent["id"]})["result"] == "already submitted"
    drive(rt, fake, rt.clock.now() + timedelta(minutes=2))
    pos = rt.store.one("SELECT * FROM positions WHERE symbol=?", (intent["symbol"],))
    assert pos is not None and pos["qty"] == intent["qty"]
    broker_pos = {p.symbol: p.qty for p in rt.engine.broker.get_positions(rt.clock.now())}
    assert broker_pos[intent["symbol"]] == intent["qty"]
    # force the stop: the bracket's stop leg at the broker closes it and the trade lands once
    fake.sim_store.execute("UPDATE sim_orders SET stop_price=? WHERE parent_id IS NOT NULL AND leg='stop_loss' "
                           "AND symbol=?", (pos["avg_price"] * 10, intent["symbol"]))
    fake.sim_store.commit()
    fake.sim.reload()  # the simulator's book is in memory
    drive(rt, fake, rt.clock.now() + timedelta(minutes=3))
    tr = rt.store.query("SELECT * FROM trades WHERE symbol=?", (intent["symbol"],))
    assert len(tr) == 1 and tr[0]["exit_reason"] == "stop_loss"
    assert rt.store.one("SELECT * FROM positions WHERE symbol=?", (intent["symbol"],)) is None
    assert fake.orders_created == 1
    rt.stop()


# ---------------------------------------------------------------- faults: never a duplicate order


def _fresh_entry(rt: Runtime, symbol: str = "AAPL", qty: float = 10):
    now = rt.clock.now()
    price = rt.engine.feed.price(symbol, now)
    intent = new_intent("entry", symbol, "buy", qty, price, now, 600, reason="test", source="test",
                        stop_price=round(price * 0.985, 2), take_profit_price=round(price * 1.03, 2))
    with rt.store.transaction():
        save_intent(rt.store, intent, "pending")
    return intent


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "slow", "drop", "lost_response"])
def test_order_faults_never_duplicate(tmp_path, fake, kind):
    rt = runtime(settings_for(tmp_path, fake), ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    intent = _fresh_entry(rt)
    # "slow": the server holds the answer until the test ends it, past the client's timeout (2 s) whatever the load
    opts = {"until": threading.Event(), "seconds": 4.0} if kind == "slow" else {}
    fake.inject(kind, path="/v2/orders", method="POST", **opts)
    result = rt.send_command("approve", {"intent_id": intent.id})
    # the order is there exactly once, whether the first answer got through or not
    for _ in range(3):
        drive(rt, fake, rt.clock.now() + timedelta(seconds=30))
    row = rt.store.one("SELECT status FROM intents WHERE id=?", (intent.id,))
    assert row["status"] == "submitted", (kind, result, row)
    assert fake.orders_created == 1, (kind, fake.order_posts)
    assert rt.store.scalar("SELECT COUNT(*) FROM orders WHERE intent_id=?", (intent.id,)) == 1
    assert rt.store.scalar("SELECT COUNT(*) FROM positions WHERE symbol='AAPL'") == 1
    rt.stop()


@pytest.mark.parametrize("change", ["buying_power_gone", "daily_loss_reached"])
def test_an_approval_the_account_no_longer_allows_is_refused_in_words_and_sends_nothing(tmp_path, fake, change):
    rt = runtime(settings_for(tmp_path, fake), ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    intent = _fresh_entry(rt)
    price = rt.engine.feed.price("MSFT", rt.clock.now())
    if change == "buying_power_gone":  # another tool spent the cash on MSFT at its price: equity unchanged
        fake.open_position("MSFT", (100_000 - 5) / price, price)
        expected = "refused: not enough buying power: $5.00 left (risk_buying_power)"
    else:  # ... or bought 100 MSFT $25 above the market: $2,500 (2.5 %) down on the day
        fake.open_position("MSFT", 100, price + 25)
        expected = "refused: daily loss limit reached: down 2.50 % today (limit 2.0 %) (risk_daily_loss)"
    rt.clock.set(rt.clock.now() + timedelta(seconds=5))  # the click comes after the tick (its account is cached)
    fake.set_time(rt.clock.now())
    result = rt.send_command("approve", {"intent_id": intent.id})
    assert (result["status"], result["result"]) == ("done", expected)
    assert fake.orders_created == 0 and fake.order_posts == 0
    assert rt.store.one("SELECT status FROM intents WHERE id=?", (intent.id,))["status"] == "rejected"
    rt.stop()


@pytest.mark.parametrize(("kind", "reason"), [
    ("reject_buying_power", "insufficient buying power"),
    ("reject_wash_trade", "wash trade"),
    ("reject_halted", "not tradable"),
])
def test_rejections_are_recorded_not_raised(tmp_path, fake, kind, reason):
    rt = runtime(settings_for(tmp_path, fake), ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    intent = _fresh_entry(rt)
    fake.inject(kind, path="/v2/orders", method="POST")
    result = rt.send_command("approve", {"intent_id": intent.id})
    assert result["status"] == "done"
    row = rt.store.one("SELECT status, note FROM intents WHERE id=?", (intent.id,))
    assert row["status"] == "rejected" and reason in row["note"]
    assert fake.orders_created == 0
    drive(rt, fake, rt.clock.now() + timedelta(minutes=2))  # the engine carries on
    assert rt.status()["errors"] == 0
    rt.stop()


def test_partial_fill_lands_once_per_increment(tmp_path, fake):
    rt = runtime(settings_for(tmp_path, fake), ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    intent = _fresh_entry(rt, qty=11)
    fake.inject("partial_fill", seconds=60)
    rt.send_command("approve", {"intent_id": intent.id})
    # approving re-sized the hand-made 11 shares to the size rule's at the current price
    sent = int(rt.store.scalar("SELECT qty FROM intents WHERE id=?", (intent.id,)))
    assert sent > 11 and fake.orders_created == 1
    drive(rt, fake, rt.clock.now() + timedelta(seconds=60))
    first = rt.store.query("SELECT qty FROM fills WHERE symbol='AAPL'")
    assert [f["qty"] for f in first] == [sent // 2]
    drive(rt, fake, rt.clock.now() + timedelta(minutes=3))
    fills = rt.store.query("SELECT qty, price FROM fills WHERE symbol='AAPL' AND client_order_id=?",
                           (intent.client_order_id,))
    assert sorted(f["qty"] for f in fills) == [sent // 2, sent - sent // 2]
    assert rt.store.scalar("SELECT qty FROM positions WHERE symbol='AAPL'") == sent
    rt.stop()


def test_outage_skips_ticks_without_crashing_and_recovers(tmp_path, fake):
    rt = runtime(settings_for(tmp_path, fake, alpaca_max_retries=0), ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    n_signals = rt.store.scalar("SELECT COUNT(*) FROM signals")
    fake.inject("503", times=50)
    reps = []
    for _ in range(4):
        t = rt.clock.now() + timedelta(seconds=30)
        rt.clock.set(t)
        fake.set_time(t)
        reps.append(rt.run_tick())
    assert all(r.broker_error for r in reps)
    assert rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'broker problem%'") == 2  # 1/min
    fake.clear_faults()
    drive(rt, fake, rt.clock.now() + timedelta(minutes=2))
    assert rt.store.scalar("SELECT COUNT(*) FROM signals") > n_signals
    rt.stop()


def test_request_budget_is_enforced_on_our_side(tmp_path, fake):
    budget = RequestBudget(3, clock=lambda: 0.0)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    rt = runtime(settings_for(tmp_path, fake, alpaca_requests_per_min=4), ny(10, 0))
    fake.set_time(ny(10, 0))
    posts_before = len(fake.requests)
    for _ in range(5):
        rep = rt.run_tick()
    assert rep.broker_error and "budget" in rep.broker_error
    assert len(fake.requests) - posts_before <= 4
    rt.stop()


# ---------------------------------------------------------------- restart reconciliation


def test_restart_reconciles_with_the_broker_as_truth(tmp_path, fake):
    s = settings_for(tmp_path, fake)
    rt = runtime(s, ny(10, 0))
    fake.set_time(ny(10, 0))
    rt.run_tick()
    # (a) sent, answer lost, then the app died: a 'submitting' row the broker knows
    a = _fresh_entry(rt, "AAPL", 3)
    fake.inject("lost_response", path="/v2/orders", method="POST")
    fake.inject("drop", path="/v2/orders:by_client_order_id", times=10)  # cannot even ask what happened
    submit_intent(rt.store, rt.engine.broker, a, rt.clock.now())
    assert rt.store.scalar("SELECT status FROM orders WHERE client_order_id=?", (a.client_order_id,)) == "submitting"
    # (b) a 'submitting' row the broker never saw, intent still alive
    b = _fresh_entry(rt, "MSFT", 2)
    with rt.store.transaction():
        rt.store.insert("orders", {"client_order_id": b.client_order_id, "intent_id": b.id, "symbol": "MSFT",
                                   "side": "buy", "qty": 2, "type": "market", "status": "submitting",
                                   "submitted_at": rt.clock.now().isoformat(),
                                   "updated_at": rt.clock.now().isoformat(), "filled_qty": 0})
        set_intent_status(rt.store, b.id, "submitting", rt.clock.now())
    # (c) a position we recorded that the broker does not hold
    with rt.store.transaction():
        rt.store.upsert("positions", {"symbol": "META", "qty": 4, "avg_price": 700.0, "opened_at": "x",
                                      "stop_price": 690.0, "take_profit_price": 720.0, "kind": "entry",
                                      "high": 700.0, "low": 700.0, "intent_id": None})
    rt.stop()
    fake.clear_faults()
    # (d) made outside the app: a position and an open order
    fake.open_position("NVDA", 7, 180.0)
    foreign = fake.add_foreign_order("AMD", "buy", 5)
    again = runtime(s, ny(10, 1))
    fake.set_time(ny(10, 1))
    notes = again.engine.reconcile(again.clock.now())
    text = "\n".join(notes)
    assert f"order {a.client_order_id} found at broker" in text
    assert f"order {b.client_order_id} resubmitted" in text
    assert "dropped position META" in text
    assert "adopted broker position NVDA x7" in text
    assert "adopted unknown broker order" in text
    assert fake.orders_created == 3 + 0  # a, b (once each) and the foreign order; nothing duplicated
    assert again.store.scalar("SELECT COUNT(*) FROM orders WHERE reason='adopted from broker'") == 1
    assert again.store.scalar("SELECT kind FROM positions WHERE symbol='NVDA'") == "adopted"
    assert again.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'reconcile:%'") == len(notes)
    assert foreign
    again.stop()


# ---------------------------------------------------------------- secrets


def test_keys_never_reach_logs_database_or_status(tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    rt = runtime(settings_for(tmp_path, fake, auto_mode=True), ny(10, 0))
    fake.inject("500", times=2)
    fake.inject("reject_buying_power", path="/v2/orders", method="POST")
    drive(rt, fake, ny(10, 30))
    text = caplog.text + repr(rt.s) + str(rt.s.redacted()) + str(rt.status()) + rt.broker_label()
    text += "\n".join(rt.store.conn.iterdump())
    assert caplog.records, "the run logged nothing: the check would be vacuous"
    assert KEY not in text and SECRET not in text
    assert rt.broker_label().startswith("Alpaca paper · account …")
    rt.stop()
    with pytest.raises(ConfigError) as e:
        load_settings(broker="alpaca", alpaca_api_key=KEY, alpaca_secret_key="  ")
    assert "ALPACA_SECRET_KEY" in str(e.value) and KEY not in str(e.value)


def test_live_money_needs_the_second_setting():
    with pytest.raises(ConfigError, match="ALPACA_LIVE_TRADING"):
        load_settings(broker="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET, alpaca_paper=False)
    s = load_settings(broker="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET, alpaca_paper=False,
                      alpaca_live_trading="I_UNDERSTAND_REAL_MONEY")
    assert not s.alpaca_paper


# ---------------------------------------------------------------- market data and clock


def test_history_is_cached_as_parquet_and_today_is_not(tmp_path, fake):
    from core.venues.alpaca.broker import AlpacaCaller
    from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

    fake.set_time(ny(12, 0))
    md = AlpacaMarketData(make_data_client(KEY, SECRET, url_override=fake.url, timeout_s=2),
                          caller=AlpacaCaller(RequestBudget(200)), cache_dir=tmp_path / "cache")
    syms = ["AAPL", "NVDA"]
    first = md.history(syms, ANCHOR, DAY, today=DAY)
    calls = fake.count("GET", "/v2/stocks/bars")
    assert calls >= 2
    days = first["timestamp"].dt.tz_convert(NY).dt.date
    assert (days == ANCHOR).sum() == 2 * 390  # the whole completed day
    assert first[days == DAY]["timestamp"].max() < ny(12, 0)  # today only up to the server's clock
    assert sorted(p.name for p in (tmp_path / "cache" / "iex" / "AAPL").iterdir()) == ["2025-03-03.parquet"]
    again = md.history(syms, ANCHOR, DAY, today=DAY)
    assert fake.count("GET", "/v2/stocks/bars") == calls + 1  # today asked again, the cached day not
    assert (again[again["timestamp"].dt.tz_convert(NY).dt.date == ANCHOR].reset_index(drop=True)
            .equals(first[days == ANCHOR].reset_index(drop=True)))


def test_bars_and_clock_are_timezone_correct(fake):
    from core.state.store import Store
    from core.venues.alpaca.broker import AlpacaBroker, AlpacaCaller, make_trading_client
    from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

    fake.set_time(ny(10, 0))
    md = AlpacaMarketData(make_data_client(KEY, SECRET, url_override=fake.url, timeout_s=2),
                          caller=AlpacaCaller(RequestBudget(200)), cache_dir=None)
    bars = md.bars(["AAPL"], ny(9, 30), ny(10, 0))
    assert len(bars) == 30 and str(bars["timestamp"].dt.tz) == "UTC"
    assert bars["timestamp"].min() == ny(9, 30) and bars["timestamp"].max() == ny(9, 59)
    expected = SyntheticMarket(5, anchor=ANCHOR).bars(["AAPL"], ny(9, 30), ny(10, 0))
    assert bars["close"].round(4).tolist() == expected["close"].round(4).tolist()
    broker = AlpacaBroker(Store(":memory:"), make_trading_client(KEY, SECRET, paper=True, url_override=fake.url,
                                                                 timeout_s=2), caller=AlpacaCaller(RequestBudget(200)))
    clock = broker.get_clock()
    assert clock["is_open"] and clock["next_close"] == ny(16, 0) and clock["next_open"] == ny(9, 30, date(2025, 3, 5))


def test_research_replay_on_alpaca_history_equals_the_same_bars_replayed_directly(tmp_path, fake):
    from core.research.replay import run_replay

    fake.set_time(ny(10, 0, date(2025, 3, 6)))  # both replayed sessions are complete at the server
    s = load_settings(auto_mode=True, market_data="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET,
                      alpaca_data_url=fake.url, alpaca_cache_dir=str(tmp_path / "cache"))
    today = date(2025, 3, 6)  # the server's date: both sessions are complete, so cached
    with pytest.raises(ValueError, match="today"):  # core logic never reads the wall clock for it
        run_replay(s, days=2, seed=0, start=ANCHOR)
    via_alpaca = run_replay(s, days=2, seed=0, start=ANCHOR, today=today)
    direct = run_replay(load_settings(auto_mode=True), days=2, seed=5, start=ANCHOR)
    for k in ("bars", "signals", "actionable", "orders", "fills", "trades", "suppressed"):
        assert via_alpaca.stats[k] == direct.stats[k], k
    # the wire carries prices rounded to a few decimals: the same trades, P&L equal to the cent-ish
    assert via_alpaca.stats["pnl_total"] == pytest.approx(direct.stats["pnl_total"], abs=0.5)
    q = "SELECT symbol, qty, exit_reason FROM trades ORDER BY id"
    assert via_alpaca.store.query(q) == direct.store.query(q)
    assert via_alpaca.stats["trades"] > 0
    calls = fake.count("GET", "/v2/stocks/bars")
    again = run_replay(s, days=2, seed=0, start=ANCHOR, today=today)  # the second run reads the Parquet cache
    assert fake.count("GET", "/v2/stocks/bars") == calls
    assert again.stats["pnl_total"] == via_alpaca.stats["pnl_total"]


def test_research_history_caches_only_the_days_before_the_given_today(tmp_path, fake):
    from core.research.replay import alpaca_history

    fake.set_time(ny(10, 0, date(2025, 3, 6)))
    s = load_settings(market_data="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET, alpaca_data_url=fake.url,
                      alpaca_cache_dir=str(tmp_path / "cache"))
    frame = alpaca_history(s, ANCHOR, date(2025, 3, 4), today=date(2025, 3, 4))
    # three warm-up sessions before the first (the synthetic market behind the fake serves every session)
    assert set(frame["timestamp"].dt.tz_convert(NY).dt.date) == {date(2025, 2, 26), date(2025, 2, 27),
                                                                date(2025, 2, 28), ANCHOR, date(2025, 3, 4)}
    cached = {p.stem for p in (tmp_path / "cache").rglob("*.parquet")}
    assert cached == {"2025-02-26", "2025-02-27", "2025-02-28", "2025-03-03"}  # "today" is never final
