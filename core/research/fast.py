# ruff: noqa: N803, N806  (state arrays are named in capitals, as numba kernels in the field write them)
"""A research replay through the compiled kernel (``core.research.kernel``), with ``Engine.tick`` for the rest.

``KernelDriver`` holds the engine of a replay and the kernel's arrays. It runs ticks in the kernel until one must
go through the engine (an order or intent is open, a ticker becomes actionable, a basket fires, a leg is touched,
a session starts), then:

1. ``push``: what the kernel's ticks journalled goes into the engine's own journal objects (the decision log, the
   equity and token tables, the Bench events' keys, the legs' checked marks, the excursions of the stop checks),
   and the kernel's working state (buckets, scheduler, latest scores, basket streaks, cadences) into the engine's;
2. ``Engine.tick(now)`` runs that tick, as live trading would;
3. ``pull``: the engine's state (book, broker, locks, caps, protections, parameters) back into the arrays.

Each rule is defined once in ``core.rules``; the kernel calls them compiled, the engine calls them as Python. The
parity tests (``tests/test_kernel_parity.py``) compare every table of a kernel replay with a replay that runs every
tick through ``Engine.tick`` (``engine="reference"`` in ``run_replay``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np

from core.clock import NY, UTC, session_bounds, trading_date
from core.engine import Engine
from core.engine.report import TickReport
from core.feed import Observation
from core.research import kernel as kn
from core.rules import gates
from core.rules.bracket import stop_price
from core.rules.params import (
    P_BASKET_SIGNAL_MAX_AGE_S,
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
    P_STOP_LOSS_PCT,
)
from core.rules.reasons import CONFLICT, NO_DATA, PROTECTION, RATE_LIMITED, RISK_MAX_POSITIONS, reason_text
from core.state.baskets import BasketEvaluation
from core.state.caps import GLOBAL, cap_key

TIER_NAMES = ("A", "B", "Bench")
_REASON_TEXT = tuple(reason_text(c) for c in kn.COUNTED_CODES)
# a summary bucket's decision and reason by its slot (``kernel.COUNTED_CODES``)
_SLOT_REASON = np.array(_REASON_TEXT, dtype=object)
_SLOT_DECISION = np.array(["skipped" if c == NO_DATA else "suppressed" for c in kn.COUNTED_CODES], dtype=object)
_NY_MINUTES: dict[int, str] = {}


def _ny_minute(m: int) -> str:
    """A token-count minute as the engine names it: its New York ISO time."""
    got = _NY_MINUTES.get(m)
    if got is None:
        if len(_NY_MINUTES) > 100_000:
            _NY_MINUTES.clear()
        got = _NY_MINUTES[m] = datetime.fromtimestamp(m * 60, NY).isoformat()
    return got
ROWS_CAP = 65_536
COUNTS_CAP = 65_536


def _f(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _plain(a: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """A C-contiguous, writable array: a feed read back from the cache is memory-mapped read-only, and numba
    compiles a read-only array as another type (a second compile of the whole kernel); a copy costs milliseconds."""
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable and not isinstance(out, np.memmap) else np.array(out, dtype=dtype)


def _utc_iso(seconds: np.ndarray) -> list[str]:
    """``datetime.fromtimestamp(s, UTC).isoformat()`` of whole seconds, for many at once."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return [x + "+00:00" for x in text.tolist()]


def _posix(ts: str | None) -> float:
    return -math.inf if not ts else datetime.fromisoformat(ts).timestamp()


class KernelDriver:
    """The kernel's arrays for one replay's engine, and the hand-over between them (module docstring)."""

    def __init__(self, engine: Engine, ticks: list[datetime]) -> None:
        self.e = engine
        feed = engine.feed
        uni = engine.universe
        self.ticks = ticks
        self.feed = feed
        t = np.array([int(x.timestamp()) for x in ticks], dtype=np.int64)
        self.tick_t = t
        # New York dates change on a whole UTC hour (midnight and the DST switches fall on one): one look-up an hour
        by_hour: dict[int, Any] = {}
        days = [by_hour[h] if (h := int(x) // 3600) in by_hour else by_hour.setdefault(h, trading_date(tick))
                for x, tick in zip(t.tolist(), ticks, strict=True)]
        self.tick_day = np.array([d.toordinal() for d in days], dtype=np.int64)
        # RTH and the cutoff's session segment, once per session (every tick of a session shares its bounds)
        self.tick_rth = np.zeros(len(ticks), dtype=np.bool_)
        self.tick_seg = np.zeros(len(ticks), dtype=np.int64)
        self._segment_min: float | None = None
        self._since = np.full(len(ticks), np.nan)  # minutes since the open, to the close (core.clock's)
        self._left = np.full(len(ticks), np.nan)
        bounds: dict[int, tuple[float, float] | None] = {}
        for n, d in enumerate(days):
            o = d.toordinal()
            if o not in bounds:
                sb = session_bounds(d)
                bounds[o] = None if sb is None else (sb[0].timestamp(), sb[1].timestamp())
            b = bounds[o]
            if b is not None:
                x = float(t[n])
                self._since[n] = (x - b[0]) / 60.0
                self._left[n] = (b[1] - x) / 60.0
                self.tick_rth[n] = b[0] <= x < b[1]
        self.tick_bar = (np.searchsorted(feed.ts, t - kn.BAR_S, side="right") - 1).astype(np.int64)
        # the ISO strings every row of a tick and bar carries (``datetime.isoformat`` of UTC times), made once
        self.tick_iso = _utc_iso(t)
        self.tick_minute_iso = [x[:17] + "00+00:00" for x in self.tick_iso]
        self._bar_iso: list[str] | None = None
        self._bar_iso_arr: np.ndarray | None = None
        # the same as object arrays: a push gathers a column of strings by fancy indexing
        self.tick_iso_arr = np.array(self.tick_iso, dtype=object)
        self.tick_minute_iso_arr = np.array(self.tick_minute_iso, dtype=object)
        self.ts = _plain(feed.ts, np.int64)
        self.open = _plain(feed.open)
        self.high = _plain(feed.high)
        self.low = _plain(feed.low)
        self.close = _plain(feed.close)
        self.score = _plain(feed.score)
        self.spike = _plain(feed.vol_spike)
        self.lv = np.ascontiguousarray(feed._last_valid(), dtype=np.int64)
        self.col = feed.col
        self.stocks = list(uni.stocks)
        self.k_of = {s: k for k, s in enumerate(self.stocks)}
        self.tiers = [uni.get_ticker_tier(s) or "Bench" for s in self.stocks]
        self.stocks_arr = np.array(self.stocks, dtype=object)
        self.tiers_arr = np.array(self.tiers, dtype=object)
        self.k_col = np.array([self.col[s] for s in self.stocks], dtype=np.int64)
        K = np.full((len(self.stocks), kn.N_K), np.nan)
        for k, s in enumerate(self.stocks):
            K[k, kn.K_COL] = self.col[s]
            K[k, kn.K_TIER] = gates.TIER_CODES[self.tiers[k]]
            K[k, kn.K_INTERVAL] = uni.tier_intervals_s.get(self.tiers[k], 60)
            b = uni.basket_of(s)
            K[k, kn.K_ETF] = self.col.get(b.inverse_etf, -1) if b else -1
        self.K = K
        self.C = np.zeros((len(feed.symbols), kn.N_C))
        self.baskets = list(uni.baskets)
        self.B = np.zeros((len(self.baskets), kn.N_B))
        width = max([len(b.members) for b in self.baskets] + [1])
        self.BM = np.full((len(self.baskets), width), -1, dtype=np.int64)
        self.BC = np.full((len(self.baskets), max([len(b.conflicts) for b in self.baskets] + [1])), -1,
                          dtype=np.int64)
        for b, bk in enumerate(self.baskets):
            for q, m in enumerate(bk.members):
                self.BM[b, q] = self.k_of[m]
            for q, c in enumerate(bk.conflicts):
                self.BC[b, q] = self.col.get(c, -1)
            self.B[b, kn.B_ETF] = self.col[bk.inverse_etf]
        self.S = np.full(kn.N_S, np.nan)
        self.POS = np.zeros((len(feed.symbols) + 8, 4))
        self.BPOS = np.zeros((len(feed.symbols) + 8, 3))
        self.LEG = np.zeros((len(feed.symbols) + 8, 5))
        self.TS = np.zeros((3, 4))
        self.BK = np.zeros((len(self.stocks), 3, kn.N_BK))
        self.REC_ROW = np.zeros((ROWS_CAP, kn.N_ROW))
        self.REC_CNT = np.zeros((COUNTS_CAP, kn.N_CNT))
        self.REC_EQ = np.zeros((8192, kn.N_EQ))
        self.REC_TOK = np.zeros((16384, kn.N_TOK))
        self.REC_EV = np.zeros((8192, kn.N_EV))
        self.N = np.zeros(5, dtype=np.int64)
        self.WHY = np.zeros(1, dtype=np.int64)
        self.OUT = np.zeros(3)
        self.due = np.zeros(len(self.stocks), dtype=np.bool_)
        self.p = np.zeros(1)
        self.cutoffs = np.zeros((3, 2))
        self.pause_rule = ""
        self._cutoff_params: tuple[float, ...] = ()
        # the engine's keys a pull reads, per stock and per feed column (core.state.locks, core.state.caps)
        self._intervals = [float(x) for x in K[:, kn.K_INTERVAL]]
        self._cool_keys = [f"cooldown:{s}" for s in self.stocks]
        self._dir_keys = [f"dirlock:{s}" for s in self.stocks]
        self._cols = np.array(list(self.col.values()), dtype=np.int64)
        self._protect_keys = [f"protect:{s}" for s in self.col]
        self._etf_lock_keys = [f"etf_lock:{s}" for s in self.col]
        self._day_keys: tuple[str, tuple[list[str], str]] = ("", ([], ""))
        self._kv_pulled: tuple[Any, ...] | None = None  # the engine's keys and counts as the arrays last took them
        self._caps_pulled: tuple[Any, ...] | None = None
        self.pending_approvals = 0
        self._odd_event = False
        self.leg_ids: list[list[Any]] = []
        self.handbacks: dict[int, int] = {}

    # ------------------------------------------------------------ time
    def dt(self, i: int) -> datetime:
        return self.ticks[i]

    def _segments(self) -> None:
        seg_min = self.p[P_CUTOFF_SEGMENT_MIN]
        if seg_min == self._segment_min:
            return
        self._segment_min = seg_min
        segment = gates.session_segment
        self.tick_seg[:] = [segment(a, b, seg_min) for a, b in zip(self._since.tolist(), self._left.tolist(),
                                                                    strict=True)]

    # ------------------------------------------------------------ engine -> arrays
    def pull(self, at: int) -> None:
        """The engine's state into the arrays, as it stands after tick ``at`` (the engine's or the kernel's)."""
        e, st = self.e, self.e.state
        day = int(self.tick_day[at])
        t_at = float(self.tick_t[at])
        S, K, C = self.S, self.K, self.C
        self.p = np.asarray(e.live.p, dtype=np.float64)
        self._segments()
        params = tuple(self.p[i] for i in _CUTOFF_PARAMS)
        if params != self._cutoff_params:  # the table changes only with its parameters
            self._cutoff_params = params
            for seg in range(3):
                for high in (0, 1):
                    spike = self.p[P_CUTOFF_HIGH_VOL_SPIKE] if high else -math.inf
                    self.cutoffs[seg, high] = gates.dynamic_cutoff(seg, spike, *params)
        b = e.buckets
        S[kn.S_TOK_MIN] = math.nan if b._minute is None else float(b._minute)
        S[kn.S_LEFT_A] = b._left.get("A", 0)
        S[kn.S_LEFT_B] = b._left.get("B", 0)
        S[kn.S_LEFT_R] = b._left.get("Reserve", 0)
        S[kn.S_CAP_A] = b.capacities.get("A", 0)
        S[kn.S_CAP_B] = b.capacities.get("B", 0)
        S[kn.S_CAP_R] = b.capacities.get("Reserve", 0)
        S[kn.S_BORROW_S] = b.borrow_window_s
        self.TS[:] = 0.0
        S[kn.S_STATS_MIN] = math.nan
        for key in sorted(b.stats):
            m, tier = key
            v = b.stats.pop(key)
            if not math.isnan(S[kn.S_STATS_MIN]) and S[kn.S_STATS_MIN] != m:
                raise RuntimeError("token counts of two minutes in the engine after its tick")
            S[kn.S_STATS_MIN] = m
            tc = gates.TIER_CODES.get(tier, gates.TIER_BENCH)
            self.TS[tc] = (v[0], v[1], v[2], 1.0)
        sched = st.scheduler
        day_iso = datetime.fromordinal(day).date().isoformat()
        kv = e.kv._mem if hasattr(e.kv, "_mem") else {}
        # per stock, a column at a time (the keys' strings made once: ``__init__``, ``_cap_keys``)
        stocks = self.stocks
        last, latest, events = sched.last_processed, st.latest_scores, sched.pending_events
        K[:, kn.K_LAST] = [last.get(s, math.nan) for s in stocks]
        lat = [latest.get(s) for s in stocks]
        K[:, kn.K_LAT_T] = [math.nan if x is None else x[0] for x in lat]
        K[:, kn.K_LAT_S] = [math.nan if x is None else x[1] for x in lat]
        K[:, kn.K_EVENT] = [-1.0 if (ev := events.get(s)) is None else self._event_bar(ev) for s in stocks]
        self._odd_event = any(not ev.startswith("spike:") for ev in events.values())
        # the keys and counts only when the engine changed them (or the day): otherwise the arrays hold what the
        # kernel did, which ``push`` has just written into them
        kv_seen, caps_seen = self._kv_seen(day_iso), self._caps_seen(day_iso)
        if caps_seen is None or caps_seen != self._caps_pulled:
            counts = st.caps.view()
            cap_keys, global_key = self._cap_keys(day_iso)
            K[:, kn.K_CAP] = [counts.get(x, 0) for x in cap_keys]
            S[kn.S_CAP_GLOBAL] = counts.get(global_key, 0)
            self._caps_pulled = self._caps_seen(day_iso)
        if kv_seen is None or kv_seen != self._kv_pulled:
            got = [kv.get(x) for x in self._cool_keys]
            K[:, kn.K_COOL] = [-math.inf if x is None else x[1] for x in got]
            got = [kv.get(x) for x in self._dir_keys]
            K[:, kn.K_DIR_SIGN] = [0 if x is None else int(x[0]) for x in got]
            K[:, kn.K_DIR_UNTIL] = [-math.inf if x is None else x[1] for x in got]
            # the cap's slot key of that tick (a later tick's slot is new, or this one)
            slots = [gates.cap_slot(t_at, iv) for iv in self._intervals]
            got = [kv.get(f"cap:{s}:{day_iso}:{slot}") for s, slot in zip(stocks, slots, strict=True)]
            K[:, kn.K_SLOT] = [-1 if x is None else slot for x, slot in zip(got, slots, strict=True)]
            K[:, kn.K_SLOT_EXP] = [-math.inf if x is None else x[1] for x in got]
            got = [kv.get(x) for x in self._protect_keys]
            C[self._cols, kn.C_PROTECT] = [-math.inf if x is None else x[1] for x in got]
            got = [kv.get(x) for x in self._etf_lock_keys]
            C[self._cols, kn.C_ETF_LOCK] = [-math.inf if x is None else x[1] for x in got]
            self._kv_pulled = kv_seen
        book = st.book
        C[:, kn.C_HELD] = 0.0
        C[:, kn.C_LIVE_INTENT] = 0.0
        C[:, kn.C_BROKER_HELD] = 0.0
        need = bool(book.intents) or bool(book.orders)
        full = False
        n = 0
        pct = self.p[P_STOP_LOSS_PCT]
        for r in book.positions.values():
            j = self.col.get(r["symbol"])
            if j is None or r.get("kind") == "adopted":
                full = True  # a holding the feed has no bars for, or stops checked by the engine
                continue
            C[j, kn.C_HELD] = 1.0 if r["qty"] > 0 else 0.0
            self.POS[n] = (j, r["qty"], r["stop_price"] or stop_price(r["avg_price"], pct), r["avg_price"])
            n += 1
        S[kn.S_N_POS] = n
        for r in book.intents.values():
            j = self.col.get(r["symbol"])
            if j is not None:
                C[j, kn.C_LIVE_INTENT] = 1.0
        live = book.pending_buys()
        S[kn.S_PEND_N] = len(live)
        S[kn.S_PEND_NOTIONAL] = sum(q * p for q, p in live)
        broker = e.broker
        S[kn.S_CASH] = broker._cash_v
        n = 0
        for sym, (qty, avg) in sorted(broker._pos.items()):
            if qty > 0:
                self.BPOS[n] = (self.col.get(sym, -1), qty, avg)
                if sym in self.col:
                    C[self.col[sym], kn.C_BROKER_HELD] = 1.0
                n += 1
        S[kn.S_N_BPOS] = n
        pairs: dict[str, dict[str, Any]] = {}
        for o in broker._open.values():
            if o.parent_id is None or o.status != "new":
                need = True  # an order to fill, or legs held back until their entry fills
                continue
            pairs.setdefault(o.parent_id, {})[o.leg] = o
        self.leg_ids = []
        n = 0
        for parent in sorted(pairs):
            pair = pairs[parent]
            one = next(iter(pair.values()))
            j = self.col.get(one.symbol)
            if j is None:
                full = True
                continue
            stop, tp = pair.get("stop_loss"), pair.get("take_profit")
            self.LEG[n] = (j, stop.stop_price if stop else math.nan, tp.limit_price if tp else math.nan,
                           one.active_from, one.checked_until)
            self.leg_ids.append(list(pair.values()))
            n += 1
        S[kn.S_N_LEGS] = n
        S[kn.S_NEED_PY] = 1.0 if need else 0.0
        S[kn.S_NEED_FULL] = 1.0 if full or self._odd_event else 0.0
        self.pending_approvals = sum(1 for r in book.intents_with_status("pending") if r["side"] == "buy")
        S[kn.S_SOD_DAY] = day
        S[kn.S_SOD_EQ] = _f(book.start_of_day(day_iso))
        prot = st.protections
        prot._fresh()
        top = prot._pause_top
        S[kn.S_PAUSE_UNTIL] = _posix(top["pause_until"]) if top is not None else -math.inf
        self.pause_rule = top["rule"] if top is not None else ""
        S[kn.S_HALT_UNTIL] = _posix(prot._halt_until)
        S[kn.S_STOP_INTERVAL] = e.s.stop_check_interval_s
        S[kn.S_LAST_STOP] = _f(st.last_stop_check)
        S[kn.S_EQ_MIN] = _f(st.last_equity_minute)
        S[kn.S_STOP_TICK] = -1.0
        S[kn.S_EQ_TICK] = -1.0
        S[kn.S_LAST_TICK] = -1.0
        streaks = st.baskets
        for b_, bk in enumerate(self.baskets):
            prev = streaks.previous(bk.name)
            self.B[b_, kn.B_STREAK], self.B[b_, kn.B_AT], self.B[b_, kn.B_SESSION] = prev
            self.B[b_, kn.B_EVAL_TICK] = -1

    def _kv_seen(self, day_iso: str) -> tuple[Any, ...] | None:
        """Which state of the engine's keys (and day) the arrays would take; None: not known, read them."""
        kv = self.e.kv
        version = getattr(kv, "version", None)
        return None if version is None else (id(getattr(kv, "_mem", None)), version, day_iso)

    def _caps_seen(self, day_iso: str) -> tuple[Any, ...]:
        caps = self.e.state.caps
        return id(caps.view()), caps.version, day_iso

    def _cap_keys(self, day_iso: str) -> tuple[list[str], str]:
        """The day's cap-count keys of the stocks, and the global one (made once per day)."""
        if self._day_keys[0] != day_iso:
            self._day_keys = (day_iso, ([cap_key(day_iso, s) for s in self.stocks], cap_key(day_iso, GLOBAL)))
        return self._day_keys[1]

    def _event_bar(self, event_id: str) -> float:
        """The bar of a Bench spike event (``spike:SYM:bar time``); any other event is the engine's to run."""
        parts = event_id.split(":", 2)
        if len(parts) != 3 or parts[0] != "spike":
            return -1.0
        t = int(datetime.fromisoformat(parts[2]).timestamp())
        return float(np.searchsorted(self.ts, t))

    # ------------------------------------------------------------ arrays -> engine
    def push(self, drain: bool = True) -> None:
        """What the kernel's ticks journalled, and its working state, into the engine's objects. ``drain``: the
        summary buckets still open too; without it they stay open in the kernel (a settle, a ticker or a basket
        the engine decides counts nothing, and a bucket written in two parts costs an upsert more)."""
        e, st, store = self.e, self.e.state, self.e.store
        S, K, N = self.S, self.K, self.N
        if drain:
            kn.drain_buckets(self.BK, self.REC_CNT, N)
        log_ = e.decisions
        stocks, dt = self.stocks, self.dt
        self._write_rows(log_)
        self._write_counts(log_)
        tick_iso = self.tick_iso
        # equity once a minute, token counts of ended minutes
        R = self.REC_EQ
        store.upsert_many("equity", ("ts", "equity", "cash", "exposure"), [
            (tick_iso[int(i)], round(eq, 4), round(cash, 4), round(eq - cash, 4))
            for i, eq, cash in R[:int(N[kn.R_EQUITY])].tolist()])
        R = self.REC_TOK
        store.upsert_many("token_stats", ("minute", "tier", "requested", "granted", "borrowed"), [
            (_ny_minute(int(m)), TIER_NAMES[int(tier)], int(req), int(granted), int(borrowed))
            for m, tier, req, granted, borrowed in R[:int(N[kn.R_TOKENS])].tolist()])
        # Bench events: their keys, noted and cleared in order
        R = self.REC_EV
        locks = st.locks
        for n in range(int(N[kn.R_EVENTS])):
            i, op, k = (int(x) for x in R[n])
            sym = stocks[k]
            if op == kn.EV_NOTE:
                locks.note_event(sym, self._event_id(sym, int(self.tick_bar[i])), kn.EVENT_TTL_S, dt(i))
            elif op == kn.EV_CLEAR:
                locks.clear_event(sym)
            elif op == kn.EV_CAP_SLOT:
                now = dt(i)
                day = trading_date(now).isoformat()
                slot = gates.cap_slot(float(self.tick_t[i]), self.K[k, kn.K_INTERVAL])
                if locks.take_cap_slot(sym, day, slot, self.p[P_CAP_IDEMPOTENCY_S], now):
                    st.caps.count(day, sym)
            elif op == kn.EV_COOLDOWN:
                locks.start_cooldown(sym, self.p[P_COOLDOWN_S], dt(i))
            else:
                locks.lock_direction(sym, -1, self.p[P_DIRECTION_LOCK_S], dt(i))
        N[:] = 0
        b = e.buckets
        for tier in range(3):  # the current minute's token counts are held by one side at a time
            if self.TS[tier, kn.TS_PRESENT]:
                b.stats[(int(S[kn.S_STATS_MIN]), TIER_NAMES[tier])] = [int(x) for x in self.TS[tier, :3]]
        self.TS[:] = 0.0
        # the kernel's working state (also in the middle of a tick, before the engine decides a part of it)
        b._minute = None if math.isnan(S[kn.S_TOK_MIN]) else int(S[kn.S_TOK_MIN])
        if b._minute is not None:
            b._left = {"A": int(S[kn.S_LEFT_A]), "B": int(S[kn.S_LEFT_B]), "Reserve": int(S[kn.S_LEFT_R])}
            b._left = {k_: v for k_, v in b._left.items() if k_ in b.capacities}
        sched = st.scheduler
        for k, s in enumerate(stocks):
            if not math.isnan(K[k, kn.K_LAST]):
                sched.last_processed[s] = float(K[k, kn.K_LAST])
            if not math.isnan(K[k, kn.K_LAT_T]):
                st.latest_scores[s] = (float(K[k, kn.K_LAT_T]), float(K[k, kn.K_LAT_S]))
            if K[k, kn.K_EVENT] >= 0:
                sched.pending_events.setdefault(s, self._event_id(s, int(K[k, kn.K_EVENT])))
            else:
                sched.pending_events.pop(s, None)
        for n, legs in enumerate(self.leg_ids):
            checked = float(self.LEG[n, kn.L_CHECKED])
            for o in legs:
                if o.status == "new" and o.checked_until != checked:
                    o.checked_until = checked
                    e.broker._checked_dirty[o.id] = checked
        if S[kn.S_STOP_TICK] >= 0:
            at = dt(int(S[kn.S_STOP_TICK]))
            for pos in list(st.book.positions.values()):
                e.ledger.update_excursions(pos["symbol"], at)
            S[kn.S_STOP_TICK] = -1.0
        st.last_stop_check = None if math.isnan(S[kn.S_LAST_STOP]) else float(S[kn.S_LAST_STOP])
        st.last_equity_minute = None if math.isnan(S[kn.S_EQ_MIN]) else int(S[kn.S_EQ_MIN])
        if S[kn.S_EQ_TICK] >= 0:
            e.snapshots._summary_at = dt(int(S[kn.S_EQ_TICK]))
            S[kn.S_EQ_TICK] = -1.0
        streaks = st.baskets
        for b_, bk in enumerate(self.baskets):
            row = self.B[b_]
            if math.isinf(row[kn.B_AT]):
                continue
            streaks.update(bk.name, int(row[kn.B_STREAK]), float(row[kn.B_AT]), int(row[kn.B_SESSION]))
            if row[kn.B_EVAL_TICK] >= 0:
                i = int(row[kn.B_EVAL_TICK])
                t = float(self.tick_t[i])
                age = self.p[P_BASKET_SIGNAL_MAX_AGE_S]
                used = {m: float(K[self.k_of[m], kn.K_LAT_S]) for m in bk.members
                        if t - K[self.k_of[m], kn.K_LAT_T] <= age}
                blocked = int(row[kn.B_BLOCKED])
                ev = BasketEvaluation(bk.name, int(row[kn.B_N]), float(row[kn.B_RATIO]), float(row[kn.B_MEAN]),
                                      bool(row[kn.B_COND]), int(row[kn.B_STREAK]), used, blocked != 0)
                streaks.save(ev, dt(i), blocked_by=self._blocked_text(bk, blocked) if blocked else None,
                             intent_id=None)
                row[kn.B_EVAL_TICK] = -1
        # the keys and counts now hold what the arrays hold: the next pull reads them only if the engine changes them
        if self._kv_pulled is not None:
            self._kv_pulled = self._kv_seen(self._kv_pulled[2])
        if self._caps_pulled is not None:
            self._caps_pulled = self._caps_seen(self._caps_pulled[2])
        last = int(S[kn.S_LAST_TICK])
        if last >= 0:  # the last tick the kernel finished
            now = dt(last)
            e.snapshots._tick_state_at = now
            store.set_meta("replay_cursor", now.isoformat())
            S[kn.S_LAST_TICK] = -1.0

    def _write_rows(self, log_: Any) -> None:
        """The kernel's decision rows (the full log, and every decision past the cutoff) into the decision log, in
        order, as ``signal_row``'s tuples: columns gathered from the arrays at once, one tuple per row; an
        actionable row goes through ``DecisionLog.add`` (written at once, and seen by the protections)."""
        n = int(self.N[kn.R_ROWS])
        if n == 0:
            return
        R = self.REC_ROW[:n]
        ii = R[:, kn.ROW_TICK].astype(np.int64)
        kk = R[:, kn.ROW_STOCK].astype(np.int64)
        codes = R[:, kn.ROW_REASON].astype(np.int64).tolist()
        bars = R[:, kn.ROW_BAR].astype(np.int64)
        has_bar = bars >= 0
        jj = self.k_col[kk]
        bb = np.where(has_bar, bars, 0)
        raw = self.score[bb, jj].tolist()
        spike = self.spike[bb, jj].tolist()
        price = self.close[bb, jj].tolist()
        bar_ts = np.where(has_bar, self.bar_iso_arr[bb], None).tolist()
        has_bar_l = has_bar.tolist()
        syms = self.stocks_arr[kk].tolist()
        tiers = self.tiers_arr[kk].tolist()
        ts = self.tick_iso_arr[ii].tolist()
        score = R[:, kn.ROW_SCORE].tolist()
        cutoff = R[:, kn.ROW_CUTOFF].tolist()
        decision = R[:, kn.ROW_DECISION].astype(np.int64).tolist()
        reasons: dict[int, str] = {}  # the same few texts for the whole push (the pause rule, the approvals)
        for c in set(codes):
            reasons[c] = reason_text(c, self.pause_rule if c == PROTECTION else self._approvals(c))
        unscored = (RATE_LIMITED, NO_DATA)
        out = [
            (ts[x], bar_ts[x], syms[x], tiers[x],
             None if codes[x] in unscored else round(score[x], 6),
             round(raw[x], 6) if has_bar_l[x] else None, round(spike[x], 6) if has_bar_l[x] else None,
             None if codes[x] in unscored else cutoff[x],
             "actionable" if decision[x] == kn.DECISION_EVIDENCE else "skipped" if decision[x] else "suppressed",
             None if decision[x] == kn.DECISION_EVIDENCE else reasons[codes[x]],
             "evidence" if decision[x] == kn.DECISION_EVIDENCE else None,
             price[x] if has_bar_l[x] else None)
            for x in range(n)]
        evidence = [x for x in range(n) if decision[x] == kn.DECISION_EVIDENCE]
        done = 0
        for x in evidence:  # actionable: written at once, after the rows before it
            log_.rows.extend(out[done:x])
            log_.add(out[x])
            done = x + 1
        log_.rows.extend(out[done:])

    def _write_counts(self, log_: Any) -> None:
        """The kernel's summary buckets (each closed in time order) into ``signal_counts``: one
        ``DecisionLog.count_many`` of tuples gathered from the arrays at once."""
        n = int(self.N[kn.R_COUNTS])
        if n == 0:
            return
        R = self.REC_CNT[:n]
        kk = R[:, kn.CNT_STOCK].astype(np.int64)
        slot = R[:, kn.CNT_SLOT].astype(np.int64)
        F = R[:, 2:]
        first = F[:, kn.BK_FIRST].astype(np.int64)
        bars = F[:, kn.BK_BAR].astype(np.int64)
        bar_ts = np.where(bars >= 0, self.bar_iso_arr[np.where(bars >= 0, bars, 0)], None).tolist()
        price = [p if h else None for p, h in zip(F[:, kn.BK_PRICE].tolist(), F[:, kn.BK_HAS_PRICE].tolist(),
                                                  strict=True)]
        score = [round(v, 6) if h else None for v, h in zip(F[:, kn.BK_SCORE].tolist(),
                                                            F[:, kn.BK_HAS_SCORE].tolist(), strict=True)]
        log_.count_many(list(zip(
            self.stocks_arr[kk].tolist(), self.tick_minute_iso_arr[first].tolist(), _SLOT_DECISION[slot].tolist(),
            _SLOT_REASON[slot].tolist(), self.tiers_arr[kk].tolist(), F[:, kn.BK_N].astype(np.int64).tolist(),
            self.tick_iso_arr[first].tolist(), self.tick_iso_arr[F[:, kn.BK_LAST].astype(np.int64)].tolist(),
            bar_ts, price, score, strict=True)))

    def _approvals(self, code: int) -> str:
        """``RiskManager.reason``'s detail: the approvals that hold position slots."""
        n = self.pending_approvals
        return f"{n} pending approval{'' if n == 1 else 's'}" if code == RISK_MAX_POSITIONS and n > 0 else ""

    def _blocked_text(self, basket: Any, code: int) -> str:
        """What stopped a firing basket, as ``BasketRouting.route`` stores it."""
        if code == PROTECTION:
            return reason_text(code, self.pause_rule)
        if code == CONFLICT:
            held = set(self.e.state.book.holds()) | {s for s, (q, _) in self.e.broker._pos.items() if q > 0}
            return reason_text(code, ",".join(sorted(held & set(basket.conflicts))))
        return reason_text(code, self._approvals(code))

    @property
    def bar_iso(self) -> list[str]:
        if self._bar_iso is None:
            self._bar_iso = _utc_iso(self.ts)
        return self._bar_iso

    @property
    def bar_iso_arr(self) -> np.ndarray:
        if self._bar_iso_arr is None:
            self._bar_iso_arr = np.array(self.bar_iso, dtype=object)
        return self._bar_iso_arr

    def _bar_dt(self, bar: int) -> datetime:
        return datetime.fromtimestamp(int(self.ts[bar]), UTC)

    def _event_id(self, sym: str, bar: int) -> str:
        return f"spike:{sym}:{self._bar_dt(bar).isoformat()}"

    # ------------------------------------------------------------ running
    def run(self, i0: int, i1: int, settled: int = -1, resume_k: int = -1, resume_b: int = -1) -> tuple[int, int]:
        """Kernel ticks from ``i0`` up to ``i1`` (excluded), tick ``settled``'s first part done by the engine, tick
        ``i0`` resumed after stock ``resume_k`` or basket ``resume_b`` (see ``kernel.run_ticks``): (status, the
        tick it stopped at)."""
        status, at = kn.run_ticks(
            i0, i1, settled, resume_k, resume_b, self.tick_t, self.tick_day, self.tick_rth, self.tick_bar,
            self.tick_seg, self.e.decisions.mode == "summary", self.ts, self.open, self.high, self.low, self.close,
            self.score,
            self.spike, self.lv, self.p, self.cutoffs, self.S, self.K, self.C, self.B, self.BM, self.BC, self.POS,
            self.BPOS, self.LEG, self.TS, self.BK, self.due, self.REC_ROW, self.REC_CNT, self.REC_EQ, self.REC_TOK,
            self.REC_EV, self.N, self.WHY, self.OUT)
        if status != kn.DONE and status != kn.FULL_RECORDS:
            why = int(self.WHY[0])
            self.handbacks[why] = self.handbacks.get(why, 0) + 1
        return int(status), int(at)


_CUTOFF_PARAMS = (P_CUTOFF_OPEN, P_CUTOFF_MIDDAY, P_CUTOFF_CLOSE, P_CUTOFF_HIGH_VOL_SPIKE, P_CUTOFF_HIGH_VOL_ADD,
                  P_CUTOFF_DELTA)


PROGRESS_EVERY = 100  # ticks between progress calls (and cancel checks), as the reference loop's


def replay_ticks(engine: Engine, ticks: list[datetime], *, progress: Any = None, total: int = 0,
                 stop_after_ticks: int | None = None, flush_every: int = 500) -> tuple[int, bool, dict]:
    """Run ``ticks`` (a replay's, after its resume cursor) through the kernel and the engine: (ticks run,
    cancelled, hand-backs by cause). ``progress(done, total)`` as ``run_replay``'s; False cancels."""
    store = engine.store
    drv = KernelDriver(engine, ticks)
    n = len(ticks) if stop_after_ticks is None else min(len(ticks), stop_after_ticks)
    done = 0
    i = 0
    since_flush = 0
    next_progress = 0

    def engine_tick(at: int) -> None:
        engine.tick(ticks[at])
        store.set_meta("replay_cursor", ticks[at].isoformat())  # in the same transaction as the tick
        drv.pull(at)

    def engine_settle(at: int) -> None:
        now = ticks[at]
        with store.tick_scope():
            engine.feed.ensure(now)
            engine.settle(now, TickReport(now=now))
        drv.pull(at)

    settled = -1
    resume_k = resume_b = -1
    report: TickReport | None = None  # the tick's report while the engine decides parts of it

    def engine_decides(at: int, status: int) -> None:
        """A ticker or a basket of the tick, decided by the engine as ``Engine.tick`` would."""
        nonlocal report
        now = ticks[at]
        if report is None or report.now is not now:
            report = TickReport(now=now)
        what = int(drv.OUT[0])
        with store.tick_scope():
            if status == kn.TICKER:
                sym = drv.stocks[what]
                j = drv.col[sym]
                bar = int(drv.tick_bar[at])
                obs = Observation(sym, drv._bar_dt(bar), float(drv.score[bar, j]), float(drv.spike[bar, j]),
                                  float(drv.close[bar, j]))
                engine.decide.decide_ticker(now, sym, drv.tiers[what], obs, float(drv.OUT[1]), float(drv.OUT[2]),
                                            None, report)
            else:
                engine.routing.route_basket(drv.baskets[what], now, report)
        drv.pull(at)

    while i < n:
        if progress is not None and i >= next_progress and resume_k < 0 and resume_b < 0:  # between two ticks
            next_progress = i + PROGRESS_EVERY
            if progress(done, total) is False:
                drv.push()
                store.flush()
                return done, True, drv.handbacks
        if i == 0:
            engine_tick(i)  # the first tick: reconciliation and the day's start
            i += 1
            done += 1
            since_flush += 1
            continue
        limit = max(i + 1, min(n, i + flush_every - since_flush, next_progress if progress is not None else n))
        status, at = drv.run(i, limit, settled, resume_k, resume_b)
        resume_k = resume_b = -1
        done += at - i
        since_flush += at - i
        i = at
        if status in (kn.TICKER, kn.BASKET):
            drv.push(drain=False)
            engine_decides(at, status)
            if status == kn.TICKER:
                resume_k = int(drv.OUT[0])
            else:
                resume_b = int(drv.OUT[0])
            continue  # the same tick goes on in the kernel
        if status == kn.SETTLE:
            drv.push(drain=False)
            engine_settle(at)
            settled = at
        elif status == kn.HANDBACK:
            drv.push()
            engine_tick(at)
            i += 1
            done += 1
            since_flush += 1
        elif status == kn.FULL_RECORDS:
            drv.push()
            drv.pull(at - 1)
        if since_flush >= flush_every:
            drv.push()
            store.flush()
            drv.pull(i - 1)
            since_flush = 0
    drv.push()
    store.flush()
    return done, False, drv.handbacks

