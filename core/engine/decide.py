"""The one decision chain: from a due ticker to a decision row and, when every gate passes, an intent (rules §4, 7).

    token bucket -> observation -> LLM request -> mixed score -> cutoff -> (Redis stream) ->
    exit on a strong negative signal | mixer cooldown -> direction lock -> pause, protections, symbol
    cooldown, held, pending intent -> risk feasibility -> RTH daily cap -> long intent, or evidence for a basket

Each step is a plain check in ``core.rules`` (gates, risk, protections) over values; this module feeds them in
order and journals every outcome in the decision log (``_record_signal``), so each suppression has its reason.
Bench tickers join the chain on events (a filing, a volume spike).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.config import LiveParams, Settings
from core.engine.intents import new_intent, price_increment
from core.feed import MarketFeed, Observation
from core.rules import gates
from core.rules.protections import SYMBOL_COOLDOWN, Protections, symbol_cooldown_key
from core.rules.risk import DAILY_LOSS_REASON, AccountState, RiskManager
from core.rules.scheduler import TierScheduler
from core.services.llm import LLMEvent, LLMGate, blend
from core.services.redis_stream import SignalStream
from core.state.decisions import COUNTED, SUMMARY, DecisionLog
from core.state.kv import KVStore
from core.state.store import Store, iso
from core.universe import Universe

if TYPE_CHECKING:
    from core.engine.tick import TickReport


def signal_row(now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
               decision: str, reason: str | None, action: str | None) -> tuple[Any, ...]:
    """One row of the decision log (core.state.decisions writes it, or counts it in the summary form)."""
    return (iso(now), iso(obs.bar_ts) if obs else None, sym, tier,
            None if score is None else round(score, 6), None if obs is None else round(obs.score, 6),
            None if obs is None else round(obs.vol_spike, 6), cutoff, decision, reason, action,
            None if obs is None else obs.close)


class DecisionChain:
    """Decide the tick's due tickers (and the stream's messages) through the gates, in order.

    Other parts it calls: ``_queue_intent``, ``_live_intent_for`` (orders); ``account_state``, ``_tick_account``
    (memory).
    """

    s: Settings
    store: Store
    universe: Universe
    feed: MarketFeed
    kv: KVStore
    params: LiveParams
    scheduler: TierScheduler
    risk: RiskManager
    protections: Protections
    cap_counters: gates.CapCounters
    llm: LLMGate | None
    decisions: DecisionLog
    stream: SignalStream | None
    latest_scores: dict[str, tuple[float, float]]
    _cutoffs: dict[tuple[datetime, float, bool], float]
    _published: list[dict[str, Any]]

    def _detect_bench_events(self, now: datetime) -> None:
        """Bench tickers run on events: a new EDGAR filing, or a volume/volatility spike on the last bar."""
        bench = self.universe.tiers.get("Bench", ())
        if bench and self.s.edgar_enabled:
            for r in self.store.query(
                    f"SELECT id, symbol FROM events WHERE kind='filing' AND processed_at IS NULL AND created_at > ? "
                    f"AND symbol IN ({','.join('?' * len(bench))})",
                    (iso(now - timedelta(seconds=self.s.event_ttl_s)), *bench)):
                self.scheduler.add_event(r["symbol"], r["id"])
        row = self.feed.row_at(now)
        if row is None:
            return
        spikes, col, limit = row[2], self.feed.col, self.s.vol_spike_event
        for sym in bench:
            j = col.get(sym)
            if j is None or not spikes[j] >= limit:  # NaN: no spike
                continue
            obs = self.feed.observe(sym, now)
            if obs is not None and not math.isnan(obs.vol_spike) and obs.vol_spike >= self.s.vol_spike_event:
                event_id = f"spike:{sym}:{obs.bar_ts.isoformat()}"
                if sym not in self.scheduler.pending_events:
                    self.kv.set(f"event:{sym}", event_id, 300, now)
                self.scheduler.add_event(sym, event_id)

    def _process_ticker(self, sym: str, now: datetime, state: AccountState | None, rep: TickReport) -> None:
        tier = self.universe.get_ticker_tier(sym) or "Bench"
        grant = self.scheduler.consume_api_token_for_ticker(sym, now, allow_borrow=self.params.reserve_fallback)
        if not grant.granted:
            self._record_signal(now, sym, tier, None, None, None, "suppressed", "rate_limited", None, rep)
            return
        pending = self.scheduler.pending_events.get(sym)
        if pending is not None:
            self.kv.delete(f"event:{sym}")
        self.scheduler.mark_processed(sym, now)
        obs = self.feed.observe(sym, now)
        if obs is None or math.isnan(obs.score):
            self._record_signal(now, sym, tier, obs, None, None, "skipped", "no_data", None, rep)
            return
        rep.processed += 1
        spike = 0.0 if math.isnan(obs.vol_spike) else obs.vol_spike
        if self.llm is not None:  # queue a call (made by its own job; the answer mixes in on later ticks)
            self.llm.request(self._event_for(sym, obs, spike, now), obs.score, spike, now)
        if pending is not None and not pending.startswith("spike:"):
            self._take_filing(pending, now)
        score = self.mix_score(sym, obs.score, now)
        self.latest_scores[sym] = (now.timestamp(), score)
        cutoff = self._cutoff(now, spike)
        if self.stream is not None:
            msg = {"ts": iso(now), "symbol": sym, "tier": tier, "score": score, "cutoff": cutoff,
                   "bar_ts": iso(obs.bar_ts), "raw_score": obs.score, "vol_spike": obs.vol_spike, "close": obs.close}
            self.store.barrier()  # a message leaves the process: what this tick did so far is on disk
            if self.stream.publish(msg) is not None:
                self._published.append(msg)
                return  # decided by the consumer group (this process reads it back in the same tick)
        self._decide_ticker(now, sym, tier, obs, score, cutoff, state, rep)

    def _event_for(self, sym: str, obs: Any, spike: float, now: datetime) -> LLMEvent | None:
        """The event that makes an LLM call possible for ``sym`` now: a fresh unprocessed filing, else a
        volume/volatility spike on the last bar (rules §6). A filing is marked processed here, once."""
        row = self.store.one(
            "SELECT id, form FROM events WHERE symbol=? AND kind='filing' AND processed_at IS NULL AND created_at > ? "
            "ORDER BY created_at LIMIT 1", (sym, iso(now - timedelta(seconds=self.s.event_ttl_s))))
        if row is not None:
            self._take_filing(row["id"], now)
            return LLMEvent(row["id"], sym, "filing", row["form"])
        if spike >= self.s.vol_spike_event:
            return LLMEvent(f"spike:{sym}:{obs.bar_ts.isoformat()}", sym, "spike")
        return None

    def _take_filing(self, event_id: str, now: datetime) -> None:
        """A filing event is handled once: the first time a tick uses it is kept."""
        self.store.execute("UPDATE events SET processed_at=COALESCE(processed_at, ?) WHERE id=?", (iso(now), event_id))

    def mix_score(self, symbol: str, technical: float, now: datetime) -> float:
        """Mixer: blend in the newest valid LLM sentiment of the symbol inside the cache window (core.services.llm)."""
        if self.llm is not None and (s := self.llm.latest_sentiment(symbol, now)) is not None:
            return blend(technical, s[0], s[1], self.s.llm_mix_weight)
        return max(-1.0, min(1.0, technical))

    def _cutoff(self, now: datetime, spike: float) -> float:
        """``gates.dynamic_cutoff``, computed once per tick for each volatility regime."""
        high = spike >= self.s.cutoff_high_vol_spike
        key = (now, self.params.cutoff_delta, high)
        got = self._cutoffs.get(key)
        if got is None:
            if len(self._cutoffs) > 64:
                self._cutoffs.clear()
            got = self._cutoffs[key] = gates.dynamic_cutoff(now, spike, self.s, self.params.cutoff_delta)
        return got

    def _consume_stream(self, now: datetime, rep: TickReport) -> int:
        """Decide the stream's messages: first those a crashed consumer left pending, then new ones. Each is
        acknowledged after its decision row is stored; one already stored is only acknowledged."""
        assert self.stream is not None
        msgs = self.stream.claim_stale(int(self.s.redis_claim_idle_s * 1000)) + self.stream.read()
        if not self.stream.link.up:  # Redis went away after this tick published: decide those here
            msgs += [("", m) for m in self._published]
        self._published = []
        state = self.account_state(now)
        for mid, m in msgs:
            at = datetime.fromisoformat(m["ts"])
            if self.store.scalar("SELECT 1 FROM signals WHERE symbol=? AND ts=?", (m["symbol"], m["ts"])) is None:
                obs = Observation(m["symbol"], datetime.fromisoformat(m["bar_ts"]), float(m["raw_score"]),
                                  float(m["vol_spike"]), float(m["close"]))
                before = len(rep.intents)
                self._decide_ticker(at, m["symbol"], m["tier"], obs, float(m["score"]), float(m["cutoff"]), state,
                                    rep)
                self.store.barrier()  # the decision is stored before the acknowledgement
                state = self.account_state(now) if len(rep.intents) > before else state
            if mid:
                self.stream.ack([mid])
        return len(msgs)

    def _decide_ticker(self, now: datetime, sym: str, tier: str, obs: Observation, score: float, cutoff: float,
                       state: AccountState | None, rep: TickReport) -> None:
        """The gates after the cutoff, and the intent they allow (rules §4, 7). ``state``: None for this tick's
        account (built only when a ticker gets past the cutoff)."""

        def suppress(reason: str) -> None:
            self._record_signal(now, sym, tier, obs, score, cutoff, "suppressed", reason, None, rep)

        if (r := gates.check_cutoff(score, cutoff)) is not None:
            return suppress(r)
        if state is None:
            state = self._tick_account(now, rep)
        sign = 1 if score > 0 else -1
        held = state.holds(sym)
        if sign < 0 and held:
            # A strong negative signal on a held long closes it; exits skip entry gates (they reduce risk).
            gates.record_strong_signal(self.kv, sym, sign, self.params.direction_lock_s, now)
            if self._live_intent_for(sym):
                return suppress("intent_pending")
            qty = next(p.qty for p in state.positions if p.symbol == sym)
            intent = new_intent("exit", sym, "sell", qty, obs.close, now, self.s.intent_ttl_s,
                                reason=f"signal exit: score {score:+.2f} <= -{cutoff:.2f}", source=f"signal:{sym}")
            # the decision row first: it commits with the intent, so a crash during the submission cannot leave
            # an intent without its decision (a re-run tick would decide the ticker again, differently)
            self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "exit", rep)
            self._queue_intent(intent, now, rep)
            rep.actionable += 1
            return
        if (r := gates.check_mixer_cooldown(self.kv, sym, now)) is not None:
            return suppress(r)
        if (r := gates.check_direction_lock(self.kv, sym, sign, now)) is not None:
            return suppress(r)
        gates.record_strong_signal(self.kv, sym, sign, self.params.direction_lock_s, now)
        if sign > 0:
            if self.params.paused:
                return suppress("paused")
            if (rule := self.protections.entries_paused_by(now)) is not None:
                return suppress(f"protection:{rule}")
            if self.kv.get(symbol_cooldown_key(sym), now) is not None:
                return suppress(SYMBOL_COOLDOWN)
            if held:
                return suppress("already_held")
            if self._live_intent_for(sym):
                return suppress("intent_pending")
            price = obs.close
        else:
            basket = self.universe.basket_of(sym)
            price = self.feed.price(basket.inverse_etf, now) if basket else obs.close
        ok, reason = self.entry_risk_check(state, price, now)
        if not ok:
            return suppress(reason)
        slot = self.universe.tier_intervals_s.get(tier, 60)
        if (r := gates.check_rth_daily_cap(self.cap_counters.view(), self.s, sym, tier, now)) is not None:
            return suppress(r)
        gates.record_rth_signal(self.cap_counters, self.kv, self.s, sym, now, slot)
        gates.start_cooldown(self.kv, sym, self.params.cooldown_s, now)
        rep.actionable += 1
        if sign < 0:  # evidence for the basket router
            self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "evidence", rep)
            return
        size = self.risk.size_for(state, price)
        intent = new_intent(
            "entry", sym, "buy", size.qty, price, now, self.s.intent_ttl_s,
            reason=f"score {score:+.2f} >= {cutoff:.2f}" + (f" (size capped by {size.capped_by})"
                                                             if size.capped_by else ""),
            source=f"signal:{sym}", stop_price=price_increment(price * (1 - self.s.stop_loss_pct)),
            take_profit_price=price_increment(price * (1 + self.s.take_profit_pct)),
            risk_after=round(self.risk.risk_after_fill(state, size.qty, price), 6),
        )
        self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "long", rep)  # with the intent
        self._queue_intent(intent, now, rep)

    def entry_risk_check(self, state: AccountState, price: float | None, now: datetime) -> tuple[bool, str]:
        """``check_signal_risk_feasibility``, recording the day's first daily-loss halt as a protection."""
        ok, reason = self.risk.check_signal_risk_feasibility(state, price)
        self.note_risk_halt(reason, state, now)
        return ok, reason

    def note_risk_halt(self, reason: str, state: AccountState, now: datetime) -> None:
        """A refusal by the daily loss limit is recorded as the day's ``daily_loss`` protection."""
        if reason == DAILY_LOSS_REASON:
            self.protections.record_daily_loss_halt(now, self.risk.daily_loss(state), self.s.daily_loss_limit)

    def _record_signal(self, now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
                       decision: str, reason: str | None, action: str | None, rep: TickReport) -> None:
        log_ = self.decisions
        if log_.mode == SUMMARY and reason in COUNTED:  # the bulk of a replay: a count, no row built
            log_.count(sym, tier, decision, reason, iso(now), iso(obs.bar_ts) if obs else None,
                       obs.close if obs else None, None if score is None else round(score, 6), 1)
        else:
            log_.add(signal_row(now, sym, tier, obs, score, cutoff, decision, reason, action))
        if decision == "suppressed" and reason:
            rep.suppressed[reason] = rep.suppressed.get(reason, 0) + 1
