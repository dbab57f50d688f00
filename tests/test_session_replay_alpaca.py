"""Issue 28: an Alpaca paper session with injected faults, replayed from its journal: each fault is found and
labelled with its cause, and nothing else differs.

The live session (tests/alpaca_session.py) runs the real Runtime and the real alpaca-py clients against the
Alpaca-shaped server on 127.0.0.1, 9:31-11:00 on a clock the test moves: the first order fills 25 bps worse than the
fill model (fill_price), the second is filled in two parts and the third is rejected (broker), an order is placed at
the broker outside the engine (outside_order), the vendor revises a bar after live received it (data), and the
broker answers 503 to everything for 60 market seconds (broker). The replay reads the bars live kept in the bar cache
and the history endpoint's copy of the day."""

from __future__ import annotations

import pytest

from core.research import session_replay as sr
from core.state.store import Store
from tests.alpaca_session import SLIP_BPS, run_fault_session


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    fs = run_fault_session(tmp_path_factory.mktemp("alpaca-session"))
    try:
        result = fs.replay()
    finally:
        fs.fake.stop()
    return fs, result


def test_each_fault_is_found_and_labelled_with_its_cause(replayed):
    fs, result = replayed
    f = fs.faults
    live = Store(fs.db, readonly=True)
    try:
        orders = {r["client_order_id"]: r for r in live.query("SELECT * FROM orders")}
        outage_rows = live.scalar("SELECT COUNT(*) FROM signals WHERE ts >= ? AND ts < ?",
                                  tuple(t.isoformat() for t in f.outage))
    finally:
        live.close()
    # the session did what the scenario says, each fault on a symbol of its own
    assert f.slipped and f.partial and f.rejected and f.outside and f.revised
    fault_symbols = [orders[f.slipped]["symbol"], orders[f.partial]["symbol"], orders[f.rejected]["symbol"],
                     f.outside[0], f.revised[0]]
    assert len(set(fault_symbols)) == 5, fault_symbols
    assert orders[f.rejected]["status"] == "rejected" and f.outside[1] not in orders  # the engine never sent it
    assert outage_rows == 0  # live decided nothing while the broker was down
    # the replay traded on the history's bars, compared with the bars live received (the bar cache)
    assert result.bars_source.startswith("Alpaca history (iex), compared with the ") and "bars live received" in \
        result.bars_source
    diffs = result.differences
    assert {d.cause for d in diffs} == {sr.FILL_PRICE, sr.BROKER, sr.DATA, sr.OUTSIDE_ORDER}
    by_key = {(d.table, d.key): d for d in diffs}

    # slippage: the order and its fill, at another price than the fill model's, and nothing else about them
    order, fill = by_key[("orders", f.slipped)], by_key[("fills", f"{f.slipped}/0")]
    assert (order.kind, list(order.fields), order.cause) == ("different", ["filled_avg_price"], sr.FILL_PRICE)
    assert (fill.kind, list(fill.fields), fill.cause) == ("different", ["price"], sr.FILL_PRICE)
    live_px, replay_px = fill.fields["price"]
    assert live_px / replay_px - 1 == pytest.approx(SLIP_BPS / 10_000, abs=2e-5)  # the venue quotes 4 decimals
    # a partial fill: live took the order in two fills, the fill model in one; the order itself ends the same
    first, second = by_key[("fills", f"{f.partial}/0")], by_key[("fills", f"{f.partial}/1")]
    assert (first.kind, list(first.fields), first.cause) == ("different", ["qty"], sr.BROKER)
    assert (second.kind, second.cause) == ("only_live", sr.BROKER)
    assert first.fields["qty"][0] + second.live_row["qty"] == first.fields["qty"][1]
    assert ("orders", f.partial) not in by_key
    # a rejection: live's order was refused, the replay's filled
    rejected = by_key[("orders", f.rejected)]
    assert rejected.cause == sr.BROKER and rejected.fields["status"] == ["rejected", "filled"]
    assert "insufficient buying power" in rejected.why
    # the order placed outside the engine: a fill live took in that the engine never sent
    outside = by_key[("fills", f"{f.outside[1]}/0")]
    assert (outside.kind, outside.symbol, outside.cause) == ("only_live", f.outside[0], sr.OUTSIDE_ORDER)
    # the revised bar: the decision that read it differs in price, as data
    sym, bar = f.revised
    read_it = [d for d in diffs if d.table == "decisions" and d.symbol == sym
               and d.replay_row and d.replay_row["bar_ts"] == bar.isoformat()]
    assert read_it and all(d.cause == sr.DATA and "price" in d.fields for d in read_it)
    assert f"the {sym} bar of {bar.isoformat()} changed after live saw it" in read_it[0].why
    # the outage: what the replay did while live's ticks failed, and nothing else
    start, end = (t.isoformat() for t in f.outage)
    down = [d for d in diffs if start <= d.ts < end]
    assert down and {(d.kind, d.cause) for d in down} == {("only_replay", sr.BROKER)}
    assert {d.table for d in down} == {"decisions", "equity"}


def test_nothing_else_differs(replayed):
    """Every difference is on a faulted symbol from its fault on (with that fault's cause), inside the outage, or an
    equity row owed to a fault before it; every other row of the session matched."""
    fs, result = replayed
    f = fs.faults
    live = Store(fs.db, readonly=True)
    try:
        placed = {r["client_order_id"]: (r["symbol"], r["submitted_at"]) for r in live.query("SELECT * FROM orders")}
        outside_at = live.scalar("SELECT ts FROM fills WHERE client_order_id=?", (f.outside[1],))
        span = (live.scalar("SELECT MIN(ts) FROM session_snapshots"), live.scalar("SELECT MAX(ts) FROM engine_calls"))
        rows = {t: live.scalar(f"SELECT COUNT(*) FROM {t} WHERE ts >= ? AND ts <= ?", span)
                for t in ("signals", "equity")}
    finally:
        live.close()
    faults = sorted([  # (from, symbol, cause)
        (placed[f.slipped][1], placed[f.slipped][0], sr.FILL_PRICE),
        (placed[f.partial][1], placed[f.partial][0], sr.BROKER),
        (placed[f.rejected][1], placed[f.rejected][0], sr.BROKER),
        (outside_at, f.outside[0], sr.OUTSIDE_ORDER),
        (f.revised[1].isoformat(), f.revised[0], sr.DATA),
    ])
    cause_of = {sym: cause for _, sym, cause in faults}
    since = {sym: ts for ts, sym, _ in faults}
    start, end = (t.isoformat() for t in f.outage)
    assert not [d for d in result.differences if d.cause == sr.UNEXPLAINED]
    for d in result.differences:
        where = f"{d.table} {d.key} ({d.kind}, {d.cause})"
        if start <= d.ts < end:
            assert d.cause == sr.BROKER, where
        elif d.symbol is not None:
            assert d.symbol in cause_of, f"a symbol without a fault differs: {where}"
            assert d.cause == cause_of[d.symbol] and d.ts >= since[d.symbol], where
        else:
            assert d.table == "equity", where
            assert d.cause in {c for ts, _, c in faults if ts <= d.ts}, where
    # after the outage the replay carries on from the state live journalled when it came back: the faults' effects
    # on the account end there, and the orders sent later (filled at the bar their tick opened, as the venue does)
    # leave the account as live saw it
    assert not [d for d in result.differences if d.table == "equity" and d.ts >= end]
    # before the second fault only the slipped fill can move the account: its equity rows say fill_price
    early = [d for d in result.differences if d.table == "equity" and d.ts < faults[1][0]]
    assert early and {d.cause for d in early} == {sr.FILL_PRICE}
    # the rest matched: every live decision and equity row is matched or one of the differences above
    for table, live_table in (("decisions", "signals"), ("equity", "equity")):
        differing = sum(d.kind != "only_replay" for d in result.differences if d.table == table)
        assert result.matched[table] + differing == rows[live_table], table
    assert result.matched["decisions"] > 650 and result.matched["orders"] >= 5 and result.matched["trades"] >= 1
    by_cause = result.summary["pnl_difference_by_cause"]
    assert set(by_cause) <= {sr.FILL_PRICE, sr.BROKER, sr.DATA, sr.OUTSIDE_ORDER} and sr.FILL_PRICE in by_cause
    assert sum(by_cause.values()) == pytest.approx(result.summary["pnl_difference"], abs=1e-3)
