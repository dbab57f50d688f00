"""Approve and Reject at the edges (rules §9): the re-check at approval, the pause, the intent's window to the
second, and a broker's refusal of the order. Each calls ``Engine.decide_intent`` (what an Approve command runs)
with no tick in between, so the decision itself is what is tested, not the tick's own expiry sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.engine.intents import new_intent, save_intent, submit_intent
from tests.helpers import DAY, ScriptedStrategy, at, broker_order_count, flat_bars, gap_at, make_engine

T = at(DAY, 10, 0)


def nvda_long(sym, ts):
    return 0.6 if sym == "NVDA" else 0.0


def waiting(**overrides):
    """A manual-mode engine with NVDA's entry (266 shares at 100) waiting for Approve since T."""
    bars = overrides.pop("bars", flat_bars([DAY]))
    e = make_engine(bars, ScriptedStrategy(nvda_long), **overrides)
    e.tick(T)
    [row] = e.store.query("SELECT * FROM intents WHERE symbol='NVDA'")
    assert row["status"] == "pending" and row["qty"] == 266
    return e, row


def test_approval_re_prices_at_the_current_price():
    # NVDA trades at 150 from the bar of T on (the intent was priced on the bar before, at 100): the 266 shares
    # would be 39,900, over one slot (26,667); the approval sends what the slot buys at 150, bracketed from 150
    e, row = waiting(bars=flat_bars([DAY], overrides=gap_at("NVDA", T, 150.0)))
    got = e.decide_intent(row["id"], approve=True, who="trader", now=T + timedelta(minutes=1, seconds=30))
    assert got.startswith("submitted: BUY 177 NVDA at ~$150.00, +50.0 % since the signal at $100.00; "
                          "stop $147.75, take-profit $154.50"), got
    assert broker_order_count(e) == 1
    assert e.store.scalar("SELECT qty FROM sim_orders WHERE parent_id IS NULL AND symbol='NVDA'") == 177


def test_approval_re_checks_risk_at_the_current_price():
    # the day started 3 % above where the account stands at approval: the daily loss limit refuses it
    e, row = waiting()
    e.store.execute("UPDATE day_state SET start_equity=103000 WHERE date=?", (str(DAY),))
    e.state.book.start_equity[str(DAY)] = 103_000.0
    got = e.decide_intent(row["id"], approve=True, who="trader", now=T + timedelta(seconds=30))
    assert got.startswith("refused: daily loss limit reached") and got.endswith("(risk_daily_loss)"), got
    assert broker_order_count(e) == 0
    assert e.store.scalar("SELECT status FROM intents WHERE id=?", (row["id"],)) == "rejected"


def test_approval_at_an_unchanged_price_submits():
    e, row = waiting()
    got = e.decide_intent(row["id"], approve=True, who="trader", now=T + timedelta(seconds=30))
    assert got.startswith("submitted: BUY 266 NVDA at ~$100.00"), got
    assert broker_order_count(e) == 1


def test_an_entry_approved_while_paused_is_refused():
    e, row = waiting()
    e.set_params({"paused": True}, who="trader", now=T)
    got = e.decide_intent(row["id"], approve=True, who="trader", now=T + timedelta(seconds=30))
    assert got == "refused: trading is paused: no new entries (paused)"
    assert broker_order_count(e) == 0


@pytest.mark.parametrize(("after_s", "outcome"), [(119, "submitted"), (120, "expired")])
def test_the_approval_window_is_120_s_to_the_second(after_s, outcome):
    e, row = waiting()  # INTENT_TTL_S: 120 s (market seconds in an engine without a wall clock)
    got = e.decide_intent(row["id"], approve=True, who="trader", now=T + timedelta(seconds=after_s))
    assert got.split(":", 1)[0] == outcome, got
    assert broker_order_count(e) == (1 if outcome == "submitted" else 0)


@pytest.mark.parametrize(("after_s", "status"), [(90, "pending"), (120, "expired")])
def test_a_tick_at_the_deadline_expires_the_intent(after_s, status):
    e, row = waiting()
    e.tick(T + timedelta(seconds=after_s))
    assert e.store.scalar("SELECT status FROM intents WHERE id=?", (row["id"],)) == status


def test_an_order_the_broker_refuses_leaves_its_intent_rejected():
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(lambda s, t: 0.0))
    e.tick(T)
    # the simulated broker refuses a fractional quantity, as Alpaca refuses one on a bracket order
    intent = new_intent("entry", "AAPL", "buy", 1.5, 100.0, T, 120, reason="test", source="test")
    with e.store.transaction():
        save_intent(e.store, intent, "pending")
    order = submit_intent(e.store, e.broker, intent, T)
    assert order is not None and order.status == "rejected"
    assert e.store.scalar("SELECT status FROM intents WHERE id=?", (intent.id,)) == "rejected"
    assert e.store.scalar("SELECT status FROM orders WHERE client_order_id=?", (intent.client_order_id,)) == "rejected"
