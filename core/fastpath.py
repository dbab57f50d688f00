"""Replay fast path: ticks where nothing can trade are applied in memory, with the same outcome.

A tick is *quiet* when the account is flat (no position, no open order, no pending or
submitting intent), the day's start-of-day row exists, no Bench event is pending or
starting, every due ticker's score is below its dynamic cutoff, and no basket would
fire. Such a tick can only: spend tokens, mark tickers processed, update the latest
scores, log ``below_cutoff`` / ``rate_limited`` / ``no_data`` decisions, advance the
basket streaks, take the per-minute equity snapshot (equity = cash while flat) and the
token statistics. ``QuietTicks.try_tick`` checks all of that *before* changing anything,
then applies exactly those effects, buffering the rows; ``flush`` writes them in tick
order before the next full ``Engine.tick`` and at the end. Every other tick runs the
full engine, so the two modes give identical databases (tests/test_fastpath.py).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from core import gates
from core.clock import NY, is_rth, trading_date
from core.engine import SIGNAL_INSERT, Engine, signal_row
from core.ratelimit import LocalTokenBuckets
from core.risk import AccountState, PositionRisk
from core.store import iso


class QuietTicks:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.calm_day: Any = None  # the trading date for which the calm state was established
        self.cash = 0.0
        self.sim_positions: list[tuple[str, float, float]] = []
        self.legs: dict[str, dict[str, Any]] = {}
        self.held: set[str] = set()
        self.pos_rows: list[dict[str, Any]] = []
        self.sod: float | None = None
        self._now: datetime | None = None
        self.signals: list[tuple[Any, ...]] = []
        self.equity: list[dict[str, Any]] = []
        self.tokens: list[tuple[int, str, int, int, int]] = []
        self.baskets: dict[str, tuple[Any, datetime, str | None]] = {}
        self.last_now: datetime | None = None
        self.last_minute_now: datetime | None = None
        self.applied = 0

    # ------------------------------------------------------------ state after a full tick
    def after_full_tick(self, now: datetime) -> None:
        """Re-establish whether the account is calm (only a full tick can change it) and cache what a quiet tick
        reads: the simulated broker's cash, positions and active bracket legs."""
        st = self.e.store
        calm = (
            self.e._reconciled
            and st.scalar("SELECT 1 FROM intents WHERE status IN ('pending','submitting') LIMIT 1") is None
            and st.scalar("SELECT 1 FROM orders WHERE status IN ('new','accepted','pending_new','partially_filled',"
                          "'submitting') LIMIT 1") is None
            and st.scalar("SELECT 1 FROM sim_orders WHERE (parent_id IS NULL AND status IN ('new','held')) "
                          "OR status='held' LIMIT 1") is None
            and st.scalar("SELECT 1 FROM commands WHERE status='new' LIMIT 1") is None
            and st.scalar("SELECT 1 FROM positions WHERE kind='adopted' LIMIT 1") is None
        )
        self.calm_day = trading_date(now) if calm else None
        if not calm:
            return
        self.cash = float(st.scalar("SELECT cash FROM sim_account WHERE id=1") or 0.0)
        self.sim_positions = [(r["symbol"], r["qty"], r["avg_price"]) for r in st.query(
            "SELECT * FROM sim_positions WHERE qty > 0 ORDER BY symbol")]
        # the same rows, in the same order, as Engine.account_state reads (float sums must match exactly)
        self.pos_rows = st.query("SELECT * FROM positions WHERE qty > 0")
        self.held = {r["symbol"] for r in self.pos_rows}
        sod = st.scalar("SELECT start_equity FROM day_state WHERE date=?", (trading_date(now).isoformat(),))
        self.sod = sod
        pairs: dict[str, dict[str, Any]] = {}
        for leg in st.query("SELECT * FROM sim_orders WHERE parent_id IS NOT NULL AND status='new' "
                            "ORDER BY parent_id, leg"):
            p = pairs.setdefault(leg["parent_id"], {"symbol": leg["symbol"], "stop": None, "tp": None,
                                                    "start": int(max(leg["active_from"], leg["checked_until"] + 1)),
                                                    "checked": None})
            if leg["leg"] == "stop_loss":
                p["stop"] = leg["stop_price"]
            else:
                p["tp"] = leg["limit_price"]
        self.legs = pairs

    # ------------------------------------------------------------ one tick
    def try_tick(self, now: datetime) -> bool:
        e = self.e
        if self.calm_day is None or trading_date(now) != self.calm_day or not is_rth(now):
            return False  # outside regular hours the full tick only settles, and it is rare
        # bracket legs: a quiet tick is one where no leg is touched by the bars since the last check
        leg_moves: list[tuple[dict[str, Any], int]] = []
        for pair in self.legs.values():
            ts, _op, hi, lo, _c = e.feed.bars_between(pair["symbol"], pair["start"], now)
            if len(ts) == 0:
                continue
            if (pair["stop"] is not None and bool((lo <= pair["stop"]).any())) or (
                    pair["tp"] is not None and bool((hi >= pair["tp"]).any())):
                return False
            leg_moves.append((pair, int(ts[-1])))
        sched = e.scheduler
        if sched.pending_events:
            return False
        for sym in e.universe.tiers.get("Bench", ()):
            obs = e.feed.observe(sym, now)
            if obs is not None and not math.isnan(obs.vol_spike) and obs.vol_spike >= e.s.vol_spike_event:
                return False  # a Bench event starts: the full engine handles it
        self._now = now
        due = sched.due_tickers(now)
        # preview: token grants on a copy, each ticker's decision, the basket streaks
        trial = LocalTokenBuckets(e.buckets.capacities, e.buckets.borrow_window_s)
        trial._minute, trial._left = e.buckets._minute, dict(e.buckets._left)
        allow = e.params.reserve_fallback
        plan: list[tuple[str, str, Any, float | None, float | None, str, int]] = []
        latest = dict(e.latest_scores)
        for sym in due:
            tier = e.universe.get_ticker_tier(sym) or "Bench"
            granted = trial.try_consume(tier, now, allow_borrow=allow).granted
            if not granted:
                plan.append((sym, tier, None, None, None, "rate_limited", 0))
                continue
            obs = e.feed.observe(sym, now)
            if obs is None or math.isnan(obs.score):
                plan.append((sym, tier, obs, None, None, "no_data", 0))
                continue
            spike = 0.0 if math.isnan(obs.vol_spike) else obs.vol_spike
            score = e.mix_score(sym, obs.score, now)
            cutoff = gates.dynamic_cutoff(now, spike, e.s, e.params.cutoff_delta)
            latest[sym] = (now.timestamp(), score)
            reason, strong = self._decide(sym, score, cutoff, now)
            if reason is None:
                return False  # this ticker may act: the full engine decides
            plan.append((sym, tier, obs, score, cutoff, reason, strong))
        saved = dict(e.baskets.consecutive)
        evals = [e.baskets.evaluate(b, latest, now) for b in e.universe.baskets]
        blocked: dict[str, str | None] = {}
        for ev in evals:
            blocked[ev.basket.name] = None
            if ev.fires:
                why = self._basket_blocked(ev.basket)
                if why is None:
                    e.baskets.consecutive = saved
                    return False  # a basket may buy its ETF
                blocked[ev.basket.name] = why
        # quiet: apply exactly the effects the full tick would have had
        for pair, checked in leg_moves:
            pair["checked"], pair["start"] = checked, checked + 1
        for sym, tier, obs, score, cutoff, reason, strong in plan:
            grant = sched.consume_api_token_for_ticker(sym, now, allow_borrow=allow)
            if not grant.granted:
                self.signals.append(signal_row(now, sym, tier, None, None, None, "suppressed", "rate_limited", None))
                continue
            sched.mark_processed(sym, now)
            if reason == "no_data":
                self.signals.append(signal_row(now, sym, tier, obs, None, None, "skipped", "no_data", None))
                continue
            e.latest_scores[sym] = (now.timestamp(), score)
            if strong:
                gates.record_strong_signal(e.kv, sym, strong, e.params.direction_lock_s, now)
            self.signals.append(signal_row(now, sym, tier, obs, score, cutoff, "suppressed", reason, None))
        for ev in evals:
            self.baskets[ev.basket.name] = (ev, now, blocked[ev.basket.name])
        self._stops(now)
        self._snapshots(now)
        self.last_now = now
        self.applied += 1
        return True

    def _decide(self, sym: str, score: float, cutoff: float, now: datetime) -> tuple[str | None, int]:
        """The suppression ``Engine._process_ticker`` would record, when it has no other effect than a direction
        lock write (returned as the sign to record); None when the ticker may trade or exit."""
        e = self.e
        if gates.check_cutoff(score, cutoff) is not None:
            return "below_cutoff", 0
        sign = 1 if score > 0 else -1
        held = sym in self.held
        if sign < 0 and held:
            return None, 0  # an exit
        if gates.check_mixer_cooldown(e.kv, sym, now) is not None:
            return gates.MIXER_COOLDOWN, 0
        if gates.check_direction_lock(e.kv, sym, sign, now) is not None:
            return gates.DIRECTION_LOCK, 0
        if sign > 0 and e.params.paused:
            return "paused", sign
        if sign > 0 and held:
            return "already_held", sign
        # the risk check the engine runs next, on the same price it would use
        close = e.feed.observe(sym, now).close  # type: ignore[union-attr]
        basket = e.universe.basket_of(sym)
        price = close if sign > 0 else (e.feed.price(basket.inverse_etf, now) if basket else close)
        ok, reason = e.risk.check_signal_risk_feasibility(self._state(now), price)
        if not ok:
            return reason, sign
        return None, 0

    def _state(self, now: datetime) -> AccountState:
        """Engine.account_state rebuilt from the cached calm state (no pending intents while calm)."""
        equity, cash = self._equity(now)
        positions = tuple(PositionRisk(r["symbol"], r["qty"], r["avg_price"], self.e.feed.price(r["symbol"], now)
                                       or r["avg_price"], r["stop_price"]) for r in self.pos_rows)
        return AccountState(equity=equity, cash=cash, buying_power=cash,
                            start_of_day_equity=self.sod if self.sod is not None else equity, positions=positions,
                            pending_notional=0, pending_count=0)

    def _basket_blocked(self, basket: Any) -> str | None:
        """Why a firing basket cannot trade, when that is known without the risk check or the ETF lock."""
        held = self.held | {s for s, _q, _a in self.sim_positions}
        if self.e.params.paused:
            return "paused"
        if basket.inverse_etf in held:
            return "etf_held"
        conflicts = self.e.baskets.conflicts_held(basket, held)
        if conflicts:
            return "conflict:" + ",".join(conflicts)
        now = self._now
        ok, reason = self.e.risk.check_signal_risk_feasibility(self._state(now), self.e.feed.price(basket.inverse_etf,
                                                                                                    now))
        if not ok:
            return reason
        if self.e.kv.get(f"etf_lock:{basket.inverse_etf}", now) is not None:
            return "etf_lock"  # set_nx on a live lock writes nothing
        return None

    def _stops(self, now: datetime) -> None:
        # the engine's own timed check: it only updates MAE/MFE here (no adopted position, no leg touched)
        self.e._maybe_check_stops(now)

    def _equity(self, now: datetime) -> tuple[float, float]:
        """SimBroker.get_account without SQL: cash + positions at the last closed bar (same order, same sum)."""
        value = 0.0
        for sym, qty, avg in self.sim_positions:
            value += qty * (self.e.feed.price(sym, now) or avg)
        return self.cash + value, self.cash

    def _snapshots(self, now: datetime) -> None:
        e = self.e
        minute = int(now.timestamp()) // 60
        if minute != e._last_equity_minute:
            e._last_equity_minute = minute
            equity, cash = self._equity(now)
            self.equity.append({"ts": iso(now), "equity": round(equity, 4), "cash": round(cash, 4),
                                "exposure": round(equity - cash, 4)})
            self.last_minute_now = now
        self.tokens.extend(e.buckets.drain_stats(now))

    # ------------------------------------------------------------ write what was buffered
    def flush(self) -> None:
        e, st = self.e, self.e.store
        if self.last_now is None:
            return
        with st.transaction():
            if self.signals:
                st.conn.executemany(SIGNAL_INSERT, self.signals)
            for row in self.equity:
                st.upsert("equity", row)
            for m, tier, req, granted, borrowed in self.tokens:
                st.upsert("token_stats", {"minute": datetime.fromtimestamp(m * 60, NY).isoformat(), "tier": tier,
                                          "requested": req, "granted": granted, "borrowed": borrowed})
            for ev, when, why in self.baskets.values():
                e.baskets.save(ev, when, blocked_by=why, intent_id=None)
            for parent_id, pair in self.legs.items():
                if pair["checked"] is not None:
                    st.execute("UPDATE sim_orders SET checked_until=? WHERE parent_id=? AND status='new'",
                               (pair["checked"], parent_id))
                    pair["checked"] = None
            if self.last_minute_now is not None:
                summary = e.portfolio_summary(self.last_minute_now)
                summary["ts"] = iso(self.last_minute_now)
                st.set_meta("portfolio_summary", json.dumps(summary))
            st.set_meta("token_buckets", json.dumps(e.buckets.dump()))
            st.upsert("heartbeat", {"name": "tick", "ts": iso(self.last_now), "info": json.dumps({
                "paused": e.params.paused, "auto_mode": e.params.auto_mode})})
        self.signals, self.equity, self.tokens, self.baskets = [], [], [], {}
        self.last_now = self.last_minute_now = None
