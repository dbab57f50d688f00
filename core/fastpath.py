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

import numpy as np

from core import gates
from core.clock import NY, UTC, is_rth, trading_date
from core.engine import Engine, signal_row
from core.feed import BAR_S
from core.protections import SYMBOL_COOLDOWN, entries_paused_by, symbol_cooldown_key
from core.ratelimit import LocalTokenBuckets
from core.risk import DAILY_LOSS_REASON, AccountState, PositionRisk
from core.scheduler import _JITTER_S
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
        self.grid: _DayGrid | None = None  # the current session's arrays for whole quiet stretches
        self.window = _MIN_WINDOW

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
        if e.llm is not None or self.calm_day is None or trading_date(now) != self.calm_day or not is_rth(now):
            return False  # outside regular hours the full tick only settles; an LLM gate decides per tick
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
            self._note_halt(reason, now)
        for ev in evals:
            self.baskets[ev.basket.name] = (ev, now, blocked[ev.basket.name])
            self._note_halt(blocked[ev.basket.name], now)
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
        if sign > 0 and (rule := entries_paused_by(e.store, now)) is not None:
            return f"protection:{rule}", sign
        if sign > 0 and e.kv.get(symbol_cooldown_key(sym), now) is not None:
            return SYMBOL_COOLDOWN, sign
        if sign > 0 and held:
            return "already_held", sign
        # the risk check the engine runs next, on the same price it would use
        close = e.feed.observe(sym, now).close  # type: ignore[union-attr]
        basket = e.universe.basket_of(sym)
        price = close if sign > 0 else (e.feed.price(basket.inverse_etf, now) if basket else close)
        # pure here (this may be a preview); a daily-loss halt is recorded when the tick is applied
        ok, reason = e.risk.check_signal_risk_feasibility(self._state(now), price)
        if not ok:
            return reason, sign
        return None, 0

    def _note_halt(self, reason: str | None, now: datetime) -> None:
        if reason == DAILY_LOSS_REASON:
            self.e.note_risk_halt(reason, self._state(now), now)

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
        if (rule := entries_paused_by(self.e.store, self._now)) is not None:  # type: ignore[arg-type]
            return f"protection:{rule}"
        if basket.inverse_etf in held:
            return "etf_held"
        conflicts = self.e.baskets.conflicts_held(basket, held)
        if conflicts:
            return "conflict:" + ",".join(conflicts)
        now = self._now
        ok, reason = self.e.risk.check_signal_risk_feasibility(self._state(now),
                                                              self.e.feed.price(basket.inverse_etf, now))
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
            for row in self.signals:
                e.decisions.add(row)
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
            e.save_tick_state()
            st.put("heartbeat", {"name": "tick", "ts": iso(self.last_now), "info": json.dumps({
                "paused": e.params.paused, "auto_mode": e.params.auto_mode})})
        self.signals, self.equity, self.tokens, self.baskets = [], [], [], {}
        self.last_now = self.last_minute_now = None


# ==================================================================== whole quiet stretches
class _DayGrid:
    """One session's ticks with every stock's observation and cutoff at each tick, as arrays.

    ``blocks[i, j]``: stock j, if due at tick i, would pass its cutoff (the per-tick path must decide).
    """

    def __init__(self, q: QuietTicks, ticks: list[datetime]) -> None:
        e, feed = q.e, q.e.feed
        self.key = _grid_key(q, ticks)
        self.ticks = ticks
        self.ts = feed.ts
        self.tsec = np.array([int(t.timestamp()) for t in ticks], dtype=np.int64)
        self.iso = [iso(t) for t in ticks]
        self.rth = np.array([is_rth(t) for t in ticks], dtype=bool)
        self.stocks = [s for s in e.universe.stocks if (e.universe.get_ticker_tier(s) or "Bench") != "Bench"]
        self.tiers = [e.universe.get_ticker_tier(s) for s in self.stocks]
        bar = np.searchsorted(feed.ts, self.tsec - BAR_S, side="right") - 1
        bar0 = np.clip(bar, 0, None)
        self.bar = bar
        if len(feed.ts):
            self.fresh = (bar >= 0) & (self.tsec - (feed.ts[bar0] + BAR_S) <= 600)  # MarketFeed.observe's max age
        else:
            self.fresh = np.zeros(len(ticks), dtype=bool)
        cols = [feed.col[s] for s in self.stocks]
        self.score = feed.score[bar0][:, cols]
        self.spike_v = feed.vol_spike[bar0][:, cols]
        self.close = feed.close[bar0][:, cols]
        self.mixed = np.clip(self.score, -1.0, 1.0)  # Engine.mix_score without an event score
        lo = np.array([gates.dynamic_cutoff(t, -math.inf, e.s, e.params.cutoff_delta) for t in ticks])
        hi = np.array([gates.dynamic_cutoff(t, math.inf, e.s, e.params.cutoff_delta) for t in ticks])
        spike = np.where(np.isnan(self.spike_v), 0.0, self.spike_v)
        self.cut = np.where(spike >= e.s.cutoff_high_vol_spike, hi[:, None], lo[:, None])
        self.nodata = ~self.fresh[:, None] | np.isnan(self.score)
        with np.errstate(invalid="ignore"):
            self.blocks = ~self.nodata & (np.abs(self.mixed) >= self.cut)
        bench = [feed.col[s] for s in e.universe.tiers.get("Bench", ())]
        bv = feed.vol_spike[bar0][:, bench] if bench else np.zeros((len(ticks), 0))
        with np.errstate(invalid="ignore"):
            self.bench_event = self.fresh & (bv >= e.s.vol_spike_event).any(axis=1)
        self.bar_iso: dict[int, str] = {}

    def bar_ts_iso(self, i: int) -> str:
        b = int(self.bar[i])
        s = self.bar_iso.get(b)
        if s is None:
            s = self.bar_iso[b] = iso(datetime.fromtimestamp(int(self.ts[b]), UTC))
        return s


_MIN_WINDOW, _MAX_WINDOW = 8, 1024


def _grid_key(q: QuietTicks, ticks: list[datetime]) -> tuple[Any, ...]:
    e = q.e
    return (ticks[0], len(ticks), e.params.cutoff_delta, len(e.feed.ts))


def _due_indices(tsec: np.ndarray, i0: int, end: int, last: float | None, interval: float) -> np.ndarray:
    """Tick indices in [i0, end) at which a ticker is due when it is processed every time it is due
    (TierScheduler.should_process_ticker_now on a uniform tick grid)."""
    need = interval - _JITTER_S
    first = i0 if last is None else int(np.searchsorted(tsec[i0:end], last + need, side="left")) + i0
    if first >= end:
        return np.empty(0, dtype=np.int64)
    step = tsec[1] - tsec[0] if len(tsec) > 1 else 1
    k = max(1, int(math.ceil(need / step))) if need > 0 else 1
    return np.arange(first, end, k, dtype=np.int64)


def _first_tick_may_be_quiet(q: QuietTicks, g: _DayGrid, ticks: list[datetime], i0: int) -> bool:
    """A cheap look at the first tick alone: most ticks after a trade are not quiet, and saying so here spares
    the arrays below (no side effect: the per-tick path decides that tick again)."""
    if not g.rth[i0] or g.bench_event[i0]:
        return False
    sched, now = q.e.scheduler, ticks[i0]
    for j, sym in enumerate(g.stocks):
        if g.blocks[i0, j] and sched.should_process_ticker_now(sym, now):
            q._now = now
            if q._decide(sym, float(g.mixed[i0, j]), float(g.cut[i0, j]), now)[0] is None:
                return False
    return True


def try_stretch(q: QuietTicks, ticks: list[datetime], i0: int, limit: int) -> int:
    """Apply the longest run of ticks from ``ticks[i0]`` (at most ``limit``) in which every due ticker is below
    its cutoff or has no data, all tokens are granted, no Bench event starts, no bracket leg is touched and no
    basket fires: what ``QuietTicks.try_tick`` would do tick by tick, computed on arrays. Returns how many
    ticks were applied (0: use the per-tick path)."""
    e = q.e
    if (limit < 1 or e.llm is not None or q.calm_day is None or e.scheduler.pending_events
            or type(e).mix_score is not Engine.mix_score
            or trading_date(ticks[i0]) != q.calm_day):
        return 0
    g = q.grid
    if g is None or g.key != _grid_key(q, ticks):
        g = q.grid = _DayGrid(q, ticks)
    tsec = g.tsec
    if not _first_tick_may_be_quiet(q, g, ticks, i0):
        return 0
    # grow the window while stretches run to its end (long calm spells), restart small after a break
    end = min(len(ticks), i0 + limit, i0 + q.window)
    stop = np.flatnonzero(~g.rth[i0:end] | g.bench_event[i0:end])
    if len(stop):
        end = i0 + int(stop[0])
    if end - i0 < 1:
        return 0
    # which stock is due when (all of them granted, checked below)
    due = np.zeros((end - i0, len(g.stocks)), dtype=bool)
    intervals = e.universe.tier_intervals_s
    for j, sym in enumerate(g.stocks):
        idx = _due_indices(tsec, i0, end, e.scheduler.last_processed.get(sym), intervals[g.tiers[j]])
        due[idx - i0, j] = True
    # tokens: a denied request is logged as rate_limited by the per-tick path
    minutes = tsec[i0:end] // 60
    bk = e.buckets
    for tier in ("A", "B"):
        cols = [j for j, t in enumerate(g.tiers) if t == tier]
        if not cols:
            continue
        demand = due[:, cols].sum(axis=1)
        cap = bk.capacities.get(tier, 0)
        avail = np.full(len(minutes), cap)
        if bk._minute is not None:
            avail[minutes == bk._minute] = bk._left.get(tier, 0)
        cs = np.cumsum(demand)
        starts = np.r_[0, np.flatnonzero(np.diff(minutes)) + 1]
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(minutes)]))
        within = cs - np.r_[0, cs][starts][seg]  # requests so far in each tick's minute
        over = np.flatnonzero(within > avail)
        if len(over):
            end = min(end, i0 + int(over[0]))
    due = due[: end - i0]
    if end - i0 < 1:
        return 0
    # bracket legs: stop before the first tick that reveals a touching bar
    feed = e.feed
    for pair in q.legs.values():
        j = feed.col[pair["symbol"]]
        b0 = int(np.searchsorted(feed.ts, pair["start"], side="left"))
        b1 = int(g.bar[end - 1]) + 1
        if b1 <= b0:
            continue
        with np.errstate(invalid="ignore"):
            touch = np.zeros(b1 - b0, dtype=bool)
            if pair["stop"] is not None:
                touch |= feed.low[b0:b1, j] <= pair["stop"]
            if pair["tp"] is not None:
                touch |= feed.high[b0:b1, j] >= pair["tp"]
        first = np.flatnonzero(touch)
        if len(first):
            bar = b0 + int(first[0])
            end = min(end, i0 + int(np.searchsorted(g.bar[i0:end], bar, side="left")))
    due = due[: end - i0]
    if end - i0 < 1:
        return 0
    # baskets: the streak per tick over the latest scores; a firing basket goes to the per-tick path
    n = end - i0
    rows_i, rows_j = np.nonzero(due)
    latest_t: dict[str, np.ndarray] = {}
    latest_v: dict[str, np.ndarray] = {}
    for j, sym in enumerate(g.stocks):
        ok = due[:, j] & ~g.nodata[i0:end, j]
        prev = e.latest_scores.get(sym)
        idx = np.where(ok, np.arange(n), -1)
        idx = np.maximum.accumulate(idx)
        t0, v0 = (prev if prev is not None else (-math.inf, math.nan))
        latest_t[sym] = np.where(idx >= 0, tsec[i0:end][np.clip(idx, 0, None)].astype(float), t0)
        latest_v[sym] = np.where(idx >= 0, g.mixed[i0:end, j][np.clip(idx, 0, None)], v0)
    tt = tsec[i0:end].astype(float)
    streak_before: dict[str, Any] = {}
    s = e.s
    width = n
    for b in e.universe.baskets:
        nsig = np.zeros(width, dtype=np.int64)
        neg = np.zeros(width, dtype=np.int64)
        total = np.zeros(width)
        for m in b.members:
            if m in latest_t:
                lt, lv = latest_t[m], latest_v[m]
            elif m in e.latest_scores:
                lt, lv = np.full(width, e.latest_scores[m][0]), np.full(width, e.latest_scores[m][1])
            else:
                continue
            inn = tt - lt <= s.basket_signal_max_age_s
            nsig += inn
            neg += inn & (lv < 0)
            total = np.where(inn, total + np.where(inn, lv, 0.0), total)  # summed in member order, as evaluate()
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(nsig > 0, neg / np.maximum(nsig, 1), 0.0)
            mean = np.where(nsig > 0, total / np.maximum(nsig, 1), 0.0)
        cond = (nsig >= s.basket_min_signals) & (ratio >= s.basket_neg_ratio) & (mean <= s.basket_mean_score)
        # consecutive evaluations with the condition (BasketRouter.evaluate's counter), as a run length
        ks = np.arange(width)
        last_false = np.maximum.accumulate(np.where(cond, -1, ks))
        streak = np.where(cond, np.where(last_false >= 0, ks - last_false,
                                         ks + 1 + e.baskets.consecutive.get(b.name, 0)), 0)
        fires = np.flatnonzero(cond & (streak >= s.basket_consecutive_ticks))
        if len(fires):
            cut = int(fires[0])
            n = min(n, cut)
        streak_before[b.name] = streak
    # a due ticker over its cutoff goes through the engine's gates (QuietTicks._decide); the stretch ends at
    # the first tick where one of them may trade. Checked last: a suppression writes the direction lock.
    reasons: dict[tuple[int, int], str] = {}
    hits = np.argwhere(due[:n] & g.blocks[i0:i0 + n])
    k = 0
    while k < len(hits):
        i = int(hits[k][0])
        now = ticks[i0 + i]
        q._now = now
        tick_plan = []
        while k < len(hits) and int(hits[k][0]) == i:
            j = int(hits[k][1])
            sym = g.stocks[j]
            reason, strong = q._decide(sym, float(g.mixed[i0 + i, j]), float(g.cut[i0 + i, j]), now)
            tick_plan.append((j, sym, reason, strong))
            k += 1
        if any(reason is None for _j, _s, reason, _st in tick_plan):
            n = i
            break
        for j, sym, reason, strong in tick_plan:
            reasons[(i0 + i, j)] = reason  # type: ignore[assignment]
            q._note_halt(reason, now)
            if strong:
                gates.record_strong_signal(e.kv, sym, strong, e.params.direction_lock_s, now)
    if n < 1:
        q.window = _MIN_WINDOW
        return 0
    q.window = min(_MAX_WINDOW, q.window * 4) if i0 + n == end else _MIN_WINDOW
    return _apply_stretch(q, g, i0, i0 + n, due[:n], streak_before, reasons)


def _apply_stretch(q: QuietTicks, g: _DayGrid, i0: int, end: int, due: np.ndarray,
                   streaks: dict[str, Any], reasons: dict[tuple[int, int], str]) -> int:
    e = q.e
    tsec, n = g.tsec, end - i0
    feed = e.feed
    last_now = g.ticks[end - 1]
    # legs: checked through the last visible bar
    for pair in q.legs.values():
        b0 = int(np.searchsorted(feed.ts, pair["start"], side="left"))
        b1 = int(g.bar[end - 1])
        if b1 >= b0:
            pair["checked"] = int(feed.ts[b1])
            pair["start"] = pair["checked"] + 1
    # the decision log, the scheduler and the token buckets, tick by tick in universe order
    ii, jj = np.nonzero(due)
    order = np.lexsort((jj, ii))
    ii, jj = ii[order] + i0, jj[order]
    score, spike_v, close, mixed, cut, nod = g.score, g.spike_v, g.close, g.mixed, g.cut, g.nodata
    fresh = g.fresh
    tiers = g.tiers
    rows = q.signals
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        sym, tier = g.stocks[j], tiers[j]
        if nod[i, j]:
            if not fresh[i]:
                rows.append((g.iso[i], None, sym, tier, None, None, None, None, "skipped", "no_data", None, None))
            else:
                rows.append((g.iso[i], g.bar_ts_iso(i), sym, tier, None, round(float(score[i, j]), 6),
                             round(float(spike_v[i, j]), 6), None, "skipped", "no_data", None, float(close[i, j])))
            continue
        rows.append((g.iso[i], g.bar_ts_iso(i), sym, tier, round(float(mixed[i, j]), 6), round(float(score[i, j]), 6),
                     round(float(spike_v[i, j]), 6), float(cut[i, j]), "suppressed",
                     reasons.get((i, j), gates.BELOW_CUTOFF), None, float(close[i, j])))
    for j, sym in enumerate(g.stocks):
        col = np.flatnonzero(due[:, j])
        if len(col):
            k = int(col[-1]) + i0
            e.scheduler.last_processed[sym] = float(tsec[k])
            okk = np.flatnonzero(due[:, j] & ~nod[i0:end, j])
            if len(okk):
                k2 = int(okk[-1]) + i0
                e.latest_scores[sym] = (float(tsec[k2]), float(mixed[k2, j]))
    bk = e.buckets
    minutes = (tsec[ii] // 60).tolist()
    for m, j in zip(minutes, jj.tolist(), strict=True):
        tier = tiers[j]
        if m != bk._minute:
            bk._minute, bk._left = m, dict(bk.capacities)
        bk._left[tier] -= 1
        st = bk.stats[(m, tier)]
        st[0] += 1
        st[1] += 1
    # baskets: the last tick's evaluation is what the per-tick path would save
    for b in e.universe.baskets:
        streak = streaks.get(b.name)
        if streak is not None and n >= 2:  # the streak before the last tick; evaluate() adds that one
            e.baskets.consecutive[b.name] = int(streak[n - 2])
        ev = e.baskets.evaluate(b, e.latest_scores, last_now)
        q.baskets[b.name] = (ev, last_now, None)
    # timed stop check (MAE/MFE only while calm): its state after the stretch is that of its last run
    every = e.s.stop_check_interval_s
    last_check = e._last_stop_check
    ran = None
    for k in range(i0, end):
        t = float(tsec[k])
        if last_check is None or t - last_check >= every:
            last_check, ran = t, k
    if ran is not None:
        e._last_stop_check = float(tsec[ran])
        e.check_stops(g.ticks[ran])
    # per-minute equity snapshots and token statistics
    for k in range(i0, end):
        minute = int(tsec[k]) // 60
        if minute != e._last_equity_minute:
            e._last_equity_minute = minute
            equity, cash = q._equity(g.ticks[k])
            q.equity.append({"ts": g.iso[k], "equity": round(equity, 4), "cash": round(cash, 4),
                             "exposure": round(equity - cash, 4)})
            q.last_minute_now = g.ticks[k]
    q.tokens.extend(bk.drain_stats(last_now))
    q.last_now = last_now
    q.applied += n
    return n
