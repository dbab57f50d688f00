"""The one decision chain: from a due ticker to a decision row and, when every gate passes, an intent (rules §4, 7).

    token bucket -> observation -> LLM request -> mixed score -> cutoff -> (Redis stream) ->
    exit on a strong negative signal | mixer cooldown -> direction lock -> entry blocks (pause, protections,
    symbol cooldown, held, pending intent) -> risk feasibility -> RTH daily cap -> long intent, or evidence for a basket

Each step is a plain function of ``core.rules`` over numbers; this part feeds them in order from the engine's state
and journals every outcome in the decision log (``record_signal``), so each suppression has its reason. Bench
tickers join the chain on events (a filing, a volume spike).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from core.clock import minutes_since_open, minutes_to_close, trading_date
from core.config import Settings
from core.engine.account import Accounts, AccountState, EntryRisk, RiskManager
from core.engine.intents import new_intent
from core.engine.memory import EngineState  # noqa: I001  (below the rules: the state the chain reads)
from core.engine.orders import OrderFlow
from core.engine.params import LiveParameters
from core.engine.report import TickReport
from core.feed import MarketFeed, Observation
from core.rules import gates
from core.rules.params import (
    P_BENCH_DAILY_CAP,
    P_CAP_IDEMPOTENCY_S,
    P_COOLDOWN_S,
    P_CUTOFF_CLOSE,
    P_CUTOFF_DELTA,
    P_CUTOFF_HIGH_VOL_ADD,
    P_CUTOFF_HIGH_VOL_SPIKE,
    P_CUTOFF_MIDDAY,
    P_CUTOFF_OPEN,
    P_CUTOFF_SEGMENT_MIN,
    P_DIRECTION_LOCK_S,
    P_PAUSED,
    P_RESERVE_FALLBACK,
    P_RTH_DAILY_CAP,
    P_TIER_A_DAILY_CAP,
    P_TIER_B_DAILY_CAP,
)
from core.rules.reasons import INTENT_PENDING, NO_DATA, OK, PROTECTION, RATE_LIMITED, reason_text
from core.services.llm import LLMEvent, LLMGate, blend
from core.services.redis_stream import SignalStream
from core.state.decisions import COUNTED, SUMMARY, DecisionLog
from core.state.store import Store, iso
from core.universe import Universe

log = logging.getLogger(__name__)


def signal_row(now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
               decision: str, reason: str | None, action: str | None) -> tuple[Any, ...]:
    """One row of the decision log (core.state.decisions writes it, or counts it in the summary form)."""
    return (iso(now), iso(obs.bar_ts) if obs else None, sym, tier,
            None if score is None else round(score, 6), None if obs is None else round(obs.score, 6),
            None if obs is None else round(obs.vol_spike, 6), cutoff, decision, reason, action,
            None if obs is None else obs.close)


def _minutes(value: float | None) -> float:
    return math.nan if value is None else value


class DecisionChain:
    """Decide the tick's due tickers (and the stream's messages) through the gates, in order."""

    def __init__(self, settings: Settings, store: Store, universe: Universe, feed: MarketFeed, state: EngineState,
                 live: LiveParameters, orders: OrderFlow, accounts: Accounts, risk: RiskManager,
                 entry_risk: EntryRisk, decisions: DecisionLog, llm: LLMGate | None,
                 stream: SignalStream | None) -> None:
        self.s = settings
        self.store = store
        self.universe = universe
        self.feed = feed
        self.state = state
        self.live = live
        self.orders = orders
        self.accounts = accounts
        self.risk = risk
        self.entry_risk = entry_risk
        self.decisions = decisions
        self.llm = llm
        self.stream = stream
        self.published: list[dict[str, Any]] = []  # this tick's messages, until read back
        self._cutoffs: dict[tuple[datetime, float, bool], float] = {}  # see cutoff

    # ------------------------------------------------------------ Bench events
    def detect_bench_events(self, now: datetime) -> None:
        """Bench tickers run on events: a new EDGAR filing, or a volume/volatility spike on the last bar."""
        scheduler = self.state.scheduler
        bench = self.universe.tiers.get("Bench", ())
        if bench and self.s.edgar_enabled:
            for r in self.store.query(
                    f"SELECT id, symbol FROM events WHERE kind='filing' AND processed_at IS NULL AND created_at > ? "
                    f"AND symbol IN ({','.join('?' * len(bench))})",
                    (iso(now - timedelta(seconds=self.s.event_ttl_s)), *bench)):
                scheduler.add_event(r["symbol"], r["id"])
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
                if sym not in scheduler.pending_events:
                    self.state.locks.note_event(sym, event_id, 300, now)
                scheduler.add_event(sym, event_id)

    # ------------------------------------------------------------ one ticker
    def process_ticker(self, sym: str, now: datetime, account: AccountState | None, rep: TickReport) -> None:
        scheduler = self.state.scheduler
        tier = self.universe.get_ticker_tier(sym) or "Bench"
        grant = scheduler.consume_api_token_for_ticker(sym, now, allow_borrow=bool(self.live.p[P_RESERVE_FALLBACK]))
        if not grant.granted:
            self.record_signal(now, sym, tier, None, None, None, "suppressed", reason_text(RATE_LIMITED), None, rep)
            return
        pending = scheduler.pending_events.get(sym)
        if pending is not None:
            self.state.locks.clear_event(sym)
        scheduler.mark_processed(sym, now)
        obs = self.feed.observe(sym, now)
        if obs is None or math.isnan(obs.score):
            self.record_signal(now, sym, tier, obs, None, None, "skipped", reason_text(NO_DATA), None, rep)
            return
        rep.processed += 1
        spike = 0.0 if math.isnan(obs.vol_spike) else obs.vol_spike
        if self.llm is not None:  # queue a call (made by its own job; the answer mixes in on later ticks)
            self.llm.request(self._event_for(sym, obs, spike, now), obs.score, spike, now)
        if pending is not None and not pending.startswith("spike:"):
            self._take_filing(pending, now)
        score = self.mix_score(sym, obs.score, now)
        self.state.latest_scores[sym] = (now.timestamp(), score)
        cutoff = self.cutoff(now, spike)
        if self.stream is not None:
            msg = {"ts": iso(now), "symbol": sym, "tier": tier, "score": score, "cutoff": cutoff,
                   "bar_ts": iso(obs.bar_ts), "raw_score": obs.score, "vol_spike": obs.vol_spike, "close": obs.close}
            self.store.barrier()  # a message leaves the process: what this tick did so far is on disk
            if self.stream.publish(msg) is not None:
                self.published.append(msg)
                return  # decided by the consumer group (this process reads it back in the same tick)
        self.decide_ticker(now, sym, tier, obs, score, cutoff, account, rep)

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

    def cutoff(self, now: datetime, spike: float) -> float:
        """``gates.dynamic_cutoff`` of ``now``'s session segment and the bar's volatility regime, computed once per
        tick for each regime."""
        p = self.live.p
        high = spike >= p[P_CUTOFF_HIGH_VOL_SPIKE]
        key = (now, p[P_CUTOFF_DELTA], high)
        got = self._cutoffs.get(key)
        if got is None:
            if len(self._cutoffs) > 64:
                self._cutoffs.clear()
            segment = gates.session_segment(_minutes(minutes_since_open(now)), _minutes(minutes_to_close(now)),
                                            p[P_CUTOFF_SEGMENT_MIN])
            got = self._cutoffs[key] = gates.dynamic_cutoff(
                segment, spike, p[P_CUTOFF_OPEN], p[P_CUTOFF_MIDDAY], p[P_CUTOFF_CLOSE], p[P_CUTOFF_HIGH_VOL_SPIKE],
                p[P_CUTOFF_HIGH_VOL_ADD], p[P_CUTOFF_DELTA])
        return got

    # ------------------------------------------------------------ the Redis stream
    def consume_stream(self, now: datetime, rep: TickReport) -> int:
        """Decide the stream's messages: first those a crashed consumer left pending, then new ones. Each is
        acknowledged after its decision row is stored; one already stored is only acknowledged. A message is
        only a note that a ticker was scored at a minute: it must be signed with the shared key, name a stock of
        the universe at a past minute and carry the close of this engine's own bar; the price, the tier and the
        cutoff the decision uses are this engine's own (a message naming another price is refused and logged)."""
        assert self.stream is not None
        self.feed.ensure(now)  # the own bars every message is checked against (a no-op inside a tick)
        msgs = self.stream.claim_stale(int(self.s.redis_claim_idle_s * 1000)) + self.stream.read()
        if not self.stream.link.up:  # Redis went away after this tick published: decide those here
            msgs += [("", m) for m in self.published]
        self.published = []
        account = self.accounts.account_state(now)
        for mid, raw in msgs:
            m = raw if not mid else self.stream.verified(raw)  # our own unpublished messages need no signature
            if m is None:
                self._refuse_message(mid, raw, "unsigned or mis-signed")
                continue
            try:
                at, sym, obs, score = self._checked_message(m, now)
            except (KeyError, TypeError, ValueError) as e:
                self._refuse_message(mid, m, str(e))
                continue
            if self.store.scalar("SELECT 1 FROM signals WHERE symbol=? AND ts=?", (sym, iso(at))) is None:
                before = len(rep.intents)
                tier = self.universe.get_ticker_tier(sym) or "Bench"
                spike = 0.0 if math.isnan(obs.vol_spike) else obs.vol_spike
                self.decide_ticker(at, sym, tier, obs, score, self.cutoff(at, spike), account, rep)
                self.store.barrier()  # the decision is stored before the acknowledgement
                account = self.accounts.account_state(now) if len(rep.intents) > before else account
            if mid:
                self.stream.ack([mid])
        return len(msgs)

    def _checked_message(self, m: dict[str, Any], now: datetime) -> tuple[datetime, str, Observation, float]:
        """(time, symbol, this engine's own observation, the mixed score) of a stream message; ValueError names
        what is wrong with it."""
        sym = str(m["symbol"])
        if sym not in self.universe.stocks:
            raise ValueError(f"symbol {sym[:12]!r} is not a stock of the universe")
        at = datetime.fromisoformat(str(m["ts"]))
        if at.tzinfo is None or at > now:
            raise ValueError(f"time {str(m['ts'])[:40]!r} is not a past moment with its offset")
        score, close = float(m["score"]), float(m["close"])
        if not (math.isfinite(score) and -1.0 <= score <= 1.0):
            raise ValueError(f"score {str(m['score'])[:20]} outside [-1, 1]")
        own = self.feed.observe(sym, at)
        if own is None or math.isnan(own.score):
            raise ValueError(f"no bar of {sym} at {at.isoformat()} in this engine's own feed")
        tolerance = self.s.redis_price_tolerance
        if not (math.isfinite(close) and abs(close - own.close) <= tolerance * own.close):
            raise ValueError(f"close {str(m['close'])[:20]} of {sym} is not this engine's {own.close:.4f} "
                             f"(tolerance {tolerance:.2%})")
        return at, sym, own, score

    def _refuse_message(self, mid: str, fields: dict[str, Any], why: str) -> None:
        """A stream message the engine will not decide: logged, acknowledged and kept in ``signals.dead``."""
        assert self.stream is not None
        log.warning("signal stream: message %s refused: %s", mid or "(local)", why)
        if mid:
            self.stream.dead_letter(mid, fields, why)

    # ------------------------------------------------------------ the gates after the cutoff
    def decide_ticker(self, now: datetime, sym: str, tier: str, obs: Observation, score: float, cutoff: float,
                      account: AccountState | None, rep: TickReport) -> None:
        """The gates after the cutoff, and the intent they allow (rules §4, 7). ``account``: None for this tick's
        account (built only when a ticker gets past the cutoff)."""

        def refuse(reason: str) -> None:
            self.record_signal(now, sym, tier, obs, score, cutoff, "suppressed", reason, None, rep)

        def suppress(code: int, detail: str = "") -> None:
            refuse(reason_text(code, detail))

        if (code := gates.check_cutoff(score, cutoff)) != OK:
            return suppress(code)
        if account is None:
            account = self.accounts.for_tick(now, len(rep.intents))
        p, locks, t = self.live.p, self.state.locks, now.timestamp()
        sign = 1 if score > 0 else -1
        held = account.holds(sym)
        if sign < 0 and held:
            # A strong negative signal on a held long closes it; exits skip entry gates (they reduce risk).
            if self.orders.live_intent_for(sym):
                return suppress(INTENT_PENDING)
            qty = next(pos.qty for pos in account.positions if pos.symbol == sym)
            intent = new_intent("exit", sym, "sell", qty, obs.close, now, self.s.intent_ttl_s,
                                reason=f"signal exit: score {score:+.2f} <= -{cutoff:.2f}", source=f"signal:{sym}")
            locks.lock_direction(sym, sign, p[P_DIRECTION_LOCK_S], now)  # the exit is an intent of this sign
            # the decision row first: it commits with the intent, so a crash during the submission cannot leave
            # an intent without its decision (a re-run tick would decide the ticker again, differently)
            self.record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "exit", rep)
            self.orders.queue_intent(intent, now, rep)
            rep.actionable += 1
            return
        if (code := gates.check_mixer_cooldown(locks.cooldown_until(sym, now), t)) != OK:
            return suppress(code)
        lock_sign, lock_until = locks.direction(sym, now)
        if (code := gates.check_direction_lock(lock_sign, lock_until, sign, t)) != OK:
            return suppress(code)
        basket = None
        if sign > 0:
            protection = self.state.protections.entries_paused_by(now)
            code = gates.check_entry_blocks(
                bool(p[P_PAUSED]), protection is not None,
                gates.lock_holds(locks.symbol_cooldown_until(sym, now), t), held, False, False,
                self.orders.live_intent_for(sym))
            if code != OK:
                return suppress(code, protection if code == PROTECTION else "")
            price = obs.close
        else:
            basket = self.universe.basket_of(sym)
            price = self.feed.price(basket.inverse_etf, now) if basket else obs.close
        ok, reason = self.entry_risk.check(account, price, now)
        if not ok:
            return refuse(reason)
        day = trading_date(now).isoformat()
        symbol_count, global_count = self.state.caps.day_counts(day, sym)
        symbol_cap = gates.tier_cap(gates.TIER_CODES.get(tier, gates.TIER_BENCH), p[P_TIER_A_DAILY_CAP],
                                    p[P_TIER_B_DAILY_CAP], p[P_BENCH_DAILY_CAP])
        if (code := gates.check_rth_daily_cap(symbol_count, global_count, symbol_cap, p[P_RTH_DAILY_CAP])) != OK:
            return suppress(code)
        slot_s = self.universe.tier_intervals_s.get(tier, 60)
        if locks.take_cap_slot(sym, day, gates.cap_slot(t, slot_s), p[P_CAP_IDEMPOTENCY_S], now):
            self.state.caps.count(day, sym)
        locks.start_cooldown(sym, p[P_COOLDOWN_S], now)
        # the lock starts only here, where the signal becomes an intent (or a basket's evidence): a signal refused by
        # the pause, risk or the cap locks nothing (rules §4.4)
        locks.lock_direction(sym, sign, p[P_DIRECTION_LOCK_S], now)
        rep.actionable += 1
        if sign < 0:  # evidence for the basket router
            self.record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "evidence", rep)
            return
        order = self.risk.price_entry(account, price)
        intent = new_intent(
            "entry", sym, "buy", order.qty, price, now, self.s.intent_ttl_s,
            reason=f"score {score:+.2f} >= {cutoff:.2f}" + (f" (size capped by {order.capped_by})"
                                                             if order.capped_by else ""),
            source=f"signal:{sym}", stop_price=order.stop_price, take_profit_price=order.take_profit_price,
            risk_after=order.risk_after,
        )
        self.record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "long", rep)  # with the intent
        self.orders.queue_intent(intent, now, rep)

    def record_signal(self, now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
                      decision: str, reason: str | None, action: str | None, rep: TickReport) -> None:
        log_ = self.decisions
        if log_.mode == SUMMARY and reason in COUNTED:  # the bulk of a replay: a count, no row built
            log_.count(sym, tier, decision, reason, iso(now), iso(obs.bar_ts) if obs else None,
                       obs.close if obs else None, None if score is None else round(score, 6), 1)
        else:
            log_.add(signal_row(now, sym, tier, obs, score, cutoff, decision, reason, action))
        if decision == "suppressed" and reason:
            rep.suppressed[reason] = rep.suppressed.get(reason, 0) + 1
