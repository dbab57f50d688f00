# ruff: noqa: N803, N806  (state arrays are named in capitals, as numba kernels in the field write them)
"""The compiled research kernel: the ticks of a replay over array state, with the rules of ``core.rules`` compiled.

A research replay is mostly quiet ticks: the tier scheduler and the token buckets pick the due tickers, each is
scored and stopped by a gate, the baskets' streaks move, the equity is marked once a minute, the bracket legs of
the positions are checked against the new bars. ``run_ticks`` does exactly that for a range of ticks, calling the
same rule functions the live engine calls (``numba.njit(gates.check_entry_blocks)`` ...: the definitions stay
single), and appends what a tick journals to preallocated record arrays that ``core.research.fast`` writes to
SQLite.

A tick that does more than that (a ticker gets past every gate and becomes actionable, a basket fires, a bracket
leg is touched, an order or a live intent is open, a New York date starts, the daily-loss halt is met for the
first time that day) is handed back: the kernel restores the state it had at the start of that tick, returns
its index, and ``core.research.fast`` runs it through ``Engine.tick`` (the live path), then hands the state back.

Rounding (``round(x, n)``) is left to Python: numba's ``round`` with digits is not CPython's correctly rounded
one, so the dynamic cutoff comes in as a table the driver builds with ``gates.dynamic_cutoff`` and a position's
stop level comes in already priced.

Compiled code is cached on disk in ``data/numba-cache/<hash>``, where the hash covers every source file the kernel
compiles from: numba's own cache does not notice a changed rule in another module (numba issue 1833), a new hash
folder does. ``NUMBA_DISABLE_JIT=1`` runs the same source as plain Python (the debugging path).
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path

import numba
import numpy as np

from core.rules import baskets as basket_rules
from core.rules import fills, gates, risk, tokens
from core.rules.params import (
    P_BASKET_CONSECUTIVE_TICKS,
    P_BASKET_MEAN_SCORE,
    P_BASKET_MIN_SIGNALS,
    P_BASKET_NEG_RATIO,
    P_BASKET_SIGNAL_MAX_AGE_S,
    P_BASKET_STREAK_GAP_S,
    P_BENCH_DAILY_CAP,
    P_CAP_IDEMPOTENCY_S,
    P_COOLDOWN_S,
    P_CUTOFF_HIGH_VOL_SPIKE,
    P_DIRECTION_LOCK_S,
    P_PAUSED,
    P_RESERVE_FALLBACK,
    P_RTH_DAILY_CAP,
    P_TIER_A_DAILY_CAP,
    P_TIER_B_DAILY_CAP,
    P_VOL_SPIKE_EVENT,
)
from core.rules.reasons import (
    BELOW_CUTOFF,
    ETF_LOCK,
    INTENT_PENDING,
    NO_DATA,
    OK,
    RATE_LIMITED,
    RISK_DAILY_LOSS,
)

ROOT = Path(__file__).resolve().parents[2]
# every file whose code the kernel compiles (a change to any of them must never run an old kernel)
SOURCES = tuple(ROOT / "core" / p for p in (
    "research/kernel.py", "rules/gates.py", "rules/risk.py", "rules/tokens.py", "rules/baskets.py", "rules/fills.py",
    "rules/reasons.py", "rules/params.py", "rules/bracket.py"))


def source_hash(files: tuple[Path, ...] = SOURCES) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Where this source's compiled kernel is cached (``KERNEL_CACHE_DIR`` overrides the parent folder)."""
    parent = Path(os.environ.get("KERNEL_CACHE_DIR") or ROOT / "data" / "numba-cache")
    return parent / source_hash()


CACHE_DIR = cache_dir()
numba.config.CACHE_DIR = str(CACHE_DIR)  # read when a cached function is defined: before the first njit below


_JITTED: dict[object, object] = {}


def _jit(fn):  # noqa: ANN001, ANN202
    """``fn`` compiled, with the rule functions it calls compiled too: a copy of the function whose globals name the
    compiled callees (the rules stay plain Python for the live engine; numba needs every callee compiled)."""
    got = _JITTED.get(fn)
    if got is not None:
        return got
    names = set(fn.__code__.co_names)
    glb = dict(fn.__globals__)
    for name in names:
        val = glb.get(name)
        if isinstance(val, types.FunctionType) and val.__module__.startswith("core.rules"):
            glb[name] = _jit(val)
    copy = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__module__, copy.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    got = _JITTED[fn] = numba.njit(cache=True, nogil=True)(copy)
    return got


# the rules, compiled from their one definition
ticker_due = _jit(gates.ticker_due)
check_cutoff = _jit(gates.check_cutoff)
lock_holds = _jit(gates.lock_holds)
check_mixer_cooldown = _jit(gates.check_mixer_cooldown)
check_direction_lock = _jit(gates.check_direction_lock)
check_entry_blocks = _jit(gates.check_entry_blocks)
tier_cap = _jit(gates.tier_cap)
check_rth_daily_cap = _jit(gates.check_rth_daily_cap)
cap_slot = _jit(gates.cap_slot)
check_etf_lock = _jit(gates.check_etf_lock)
take_token = _jit(tokens.take_token)
needs_refill = _jit(tokens.needs_refill)
minute_of = _jit(tokens.minute_of)
bucket_of_tier = _jit(tokens.bucket_of_tier)
position_stop_risk = _jit(risk.position_stop_risk)
concurrent_risk = _jit(risk.concurrent_risk)
check_signal_risk_feasibility = _jit(risk.check_signal_risk_feasibility)
basket_members = _jit(basket_rules.basket_members)
first_bracket_hit = _jit(fills.first_bracket_hit)
basket_figures = _jit(basket_rules.basket_figures)
basket_condition = _jit(basket_rules.basket_condition)
basket_streak = _jit(basket_rules.basket_streak)
basket_fires = _jit(basket_rules.basket_fires)

JITTER_S = 2.0  # core.engine.scheduler.JITTER_S (a test checks they agree)
BAR_S = 60
MAX_OBS_AGE_S = 600  # core.feed.MarketFeed.observe's default
PRICE_LOOKBACK = 500  # core.feed.PRICE_LOOKBACK
EVENT_TTL_S = 300  # a Bench spike event's key (core.engine.decide.detect_bench_events)

# ---- the scalar state S
(S_TOK_MIN, S_LEFT_A, S_LEFT_B, S_LEFT_R, S_STATS_MIN, S_EQ_MIN, S_LAST_STOP, S_CASH, S_SOD_DAY, S_SOD_EQ,
 S_PAUSE_UNTIL, S_CAP_GLOBAL, S_PEND_N, S_PEND_NOTIONAL, S_NEED_PY, S_N_POS, S_N_BPOS, S_N_LEGS, S_CAP_A, S_CAP_B,
 S_CAP_R, S_BORROW_S, S_STOP_TICK, S_EQ_TICK, S_LAST_TICK, S_HALT_UNTIL, S_STOP_INTERVAL, S_NEED_FULL) = range(28)
N_S = 28
# ---- per stock K[k, ...] (universe.stocks order)
(K_COL, K_TIER, K_INTERVAL, K_ETF, K_LAST, K_LAT_T, K_LAT_S, K_CAP, K_EVENT, K_COOL, K_DIR_SIGN, K_DIR_UNTIL,
 K_SLOT, K_SLOT_EXP) = range(14)
N_K = 14
# ---- per feed column C[j, ...]
C_PROTECT, C_HELD, C_LIVE_INTENT, C_BROKER_HELD, C_ETF_LOCK = range(5)
N_C = 5
# ---- per basket B[b, ...]; members in BM[b, :] (stock indexes, -1 padding), conflicts in BC[b, :] (columns)
B_STREAK, B_AT, B_SESSION, B_EVAL_TICK, B_N, B_RATIO, B_MEAN, B_COND, B_ETF, B_BLOCKED = range(10)
N_B = 10
# ---- book positions (risk order) POS[n, ...]; broker positions (symbol order) BPOS[n, ...]; bracket legs LEG[n, ...]
P_COL, P_QTY, P_STOP_LEVEL, P_AVG = range(4)
BP_COL, BP_QTY, BP_AVG = range(3)
L_COL, L_STOP, L_TP, L_ACTIVE, L_CHECKED = range(5)
# ---- summary buckets BK[k, r, ...] for the counted reasons (r: 0 rate_limited, 1 no_data, 2 below_cutoff)
COUNTED_CODES = (RATE_LIMITED, NO_DATA, BELOW_CUTOFF)
BK_N, BK_MINUTE, BK_FIRST, BK_LAST, BK_BAR, BK_PRICE, BK_HAS_PRICE, BK_SCORE, BK_HAS_SCORE = range(9)
N_BK = 9
# ---- record arrays and their counters N[...]
R_ROWS, R_COUNTS, R_EQUITY, R_TOKENS, R_EVENTS = range(5)
# a decision row: tick, stock, decision (0 suppressed, 1 skipped), reason, bar (-1: none), score, cutoff
ROW_TICK, ROW_STOCK, ROW_DECISION, ROW_REASON, ROW_BAR, ROW_SCORE, ROW_CUTOFF = range(7)
N_ROW = 7
# a summary bucket: stock, reason slot, then the BK fields
CNT_STOCK, CNT_SLOT = 0, 1
N_CNT = 2 + N_BK
# equity: tick, equity, cash; token stats: minute, tier, requested, granted, borrowed; events: tick, op, stock
N_EQ, N_TOK, N_EV = 3, 5, 3
# a key the engine keeps (core.state.locks) or a cap count: tick, op, stock
EV_NOTE, EV_CLEAR, EV_CAP_SLOT, EV_COOLDOWN, EV_DIRLOCK_DOWN = 1, 2, 3, 4, 5
# the decisions of a row
DECISION_SUPPRESSED, DECISION_SKIPPED, DECISION_EVIDENCE = 0, 1, 2
# token stats TS[tier, ...]
TS_REQ, TS_GRANTED, TS_BORROWED, TS_PRESENT = range(4)

# what ``run_ticks`` returns (with the tick index it stopped at; see its docstring)
DONE, HANDBACK, FULL_RECORDS, SETTLE, TICKER, BASKET = 0, 1, 2, 3, 4, 5
# why a tick was handed back (for the bench's profile)
WHY_PYTHON, WHY_DAY, WHY_LEG, WHY_ACTIONABLE, WHY_BASKET, WHY_DAILY_LOSS, WHY_FULL = 1, 2, 3, 4, 5, 6, 7
WHY_NAMES = ("", "settle: an order or intent open", "settle: new session", "settle: bracket leg touched",
             "ticker: actionable signal", "basket: fires", "ticker or basket: the day's daily-loss halt",
             "tick: a holding only the engine handles")


@numba.njit(cache=True, nogil=True)
def _price(close, lv, bar, j):  # noqa: ANN001, ANN202
    """``MarketFeed.price``: the last close at or before ``bar`` within the look-back; NaN for none."""
    if bar < 0 or j < 0:
        return np.nan
    k = lv[bar, j]
    if k >= 0 and bar - k < PRICE_LOOKBACK:
        return close[k, j]
    return np.nan


@numba.njit(cache=True, nogil=True)
def _mark(close, lv, bar, j, avg):  # noqa: ANN001, ANN202
    """A holding's mark: ``feed.price(symbol) or avg_price``, as the engine's account and equity take it."""
    px = _price(close, lv, bar, j)
    return avg if px != px or px == 0.0 else px


@numba.njit(cache=True, nogil=True)
def _emit_bucket(BK, k, r, REC_CNT, N):  # noqa: ANN001, ANN202
    n = N[R_COUNTS]
    REC_CNT[n, CNT_STOCK] = k
    REC_CNT[n, CNT_SLOT] = r
    for f in range(N_BK):
        REC_CNT[n, 2 + f] = BK[k, r, f]
    N[R_COUNTS] = n + 1
    BK[k, r, BK_N] = 0.0


@numba.njit(cache=True, nogil=True)
def _count(BK, k, r, i, minute, bar, price, has_price, score, has_score, REC_CNT, N):  # noqa: ANN001, ANN202
    """``DecisionLog.count`` of one decision, kept per (stock, reason) for the current minute."""
    if BK[k, r, BK_N] > 0 and BK[k, r, BK_MINUTE] != minute:
        _emit_bucket(BK, k, r, REC_CNT, N)
    if BK[k, r, BK_N] == 0:
        BK[k, r, BK_MINUTE] = minute
        BK[k, r, BK_FIRST] = i
        BK[k, r, BK_HAS_PRICE] = 0.0
        BK[k, r, BK_HAS_SCORE] = 0.0
        BK[k, r, BK_PRICE] = np.nan
        BK[k, r, BK_SCORE] = np.nan
    BK[k, r, BK_N] += 1
    BK[k, r, BK_LAST] = i
    BK[k, r, BK_BAR] = bar
    if has_price:
        BK[k, r, BK_PRICE] = price
        BK[k, r, BK_HAS_PRICE] = 1.0
    if has_score:
        BK[k, r, BK_SCORE] = score
        BK[k, r, BK_HAS_SCORE] = 1.0


@numba.njit(cache=True, nogil=True)
def _decide(k, bar, score, raw_close, S, K, C, p, t, close, lv, day_start_equity, equity, exposure,  # noqa: ANN001, ANN202
            current_risk):
    """``DecisionChain.decide_ticker`` after the cutoff passed: the code of the gate that stops the ticker, or a
    hand-back (-1: actionable, -2: the day's first daily-loss halt)."""
    j = int(K[k, K_COL])
    sign = 1 if score > 0 else -1
    held = C[j, C_HELD] > 0
    if sign < 0 and held:
        if C[j, C_LIVE_INTENT] > 0:
            return INTENT_PENDING
        return -1
    code = check_mixer_cooldown(K[k, K_COOL], t)
    if code != OK:
        return code
    code = check_direction_lock(int(K[k, K_DIR_SIGN]), K[k, K_DIR_UNTIL], sign, t)
    if code != OK:
        return code
    if sign > 0:
        code = check_entry_blocks(p[P_PAUSED] != 0.0, t < S[S_PAUSE_UNTIL], lock_holds(C[j, C_PROTECT], t), held,
                                  False, False, C[j, C_LIVE_INTENT] > 0)
        if code != OK:
            return code
        price = raw_close
    else:
        etf = int(K[k, K_ETF])
        price = _price(close, lv, bar, etf) if etf >= 0 else raw_close
    code = check_signal_risk_feasibility(p, equity, day_start_equity, int(S[S_N_POS]), int(S[S_PEND_N]), price,
                                         exposure, S[S_CASH], current_risk)
    if code == RISK_DAILY_LOSS and not t < S[S_HALT_UNTIL]:
        return -2  # the halt's protection row is written by the engine, once a day
    if code != OK:
        return code
    tier = int(K[k, K_TIER])
    cap = tier_cap(tier, p[P_TIER_A_DAILY_CAP], p[P_TIER_B_DAILY_CAP], p[P_BENCH_DAILY_CAP])
    code = check_rth_daily_cap(K[k, K_CAP], S[S_CAP_GLOBAL], cap, p[P_RTH_DAILY_CAP])
    if code != OK:
        return code
    return -1 if sign > 0 else -3  # a long becomes an intent (the engine's); a negative one, basket evidence


@numba.njit(cache=True, nogil=True)
def _event(REC_EV, N, i, op, k):  # noqa: ANN001, ANN202
    e = N[R_EVENTS]
    REC_EV[e, 0] = i
    REC_EV[e, 1] = op
    REC_EV[e, 2] = k
    N[R_EVENTS] = e + 1


@numba.njit(cache=True, nogil=True)
def _evidence(i, k, t, S, K, p, REC_EV, N):  # noqa: ANN001, ANN202
    """A negative signal that passed every gate: the cap's count (once per slot), the cooldown and the direction
    lock, as ``DecisionChain.decide_ticker`` sets them; the driver writes the same keys."""
    slot = cap_slot(t, K[k, K_INTERVAL])
    if K[k, K_SLOT] != slot or not t < K[k, K_SLOT_EXP]:
        K[k, K_SLOT] = slot
        K[k, K_SLOT_EXP] = t + p[P_CAP_IDEMPOTENCY_S]
        K[k, K_CAP] += 1
        S[S_CAP_GLOBAL] += 1
        _event(REC_EV, N, i, EV_CAP_SLOT, k)
    if p[P_COOLDOWN_S] > 0:
        K[k, K_COOL] = t + p[P_COOLDOWN_S]
        _event(REC_EV, N, i, EV_COOLDOWN, k)
    if p[P_DIRECTION_LOCK_S] > 0:
        K[k, K_DIR_SIGN] = -1
        K[k, K_DIR_UNTIL] = t + p[P_DIRECTION_LOCK_S]
        _event(REC_EV, N, i, EV_DIRLOCK_DOWN, k)


@numba.njit(cache=True, nogil=True)
def run_ticks(i0, i1, settled, resume_k, resume_b, tick_t, tick_day, tick_rth, tick_bar,  # noqa: ANN001, ANN201, C901, PLR0912, PLR0915
              tick_seg, summary, ts, open_, high, low, close, score_a, spike_a, lv,
              p, cutoffs, S, K, C, B, BM, BC, POS, BPOS, LEG, TS, BK, due,
              REC_ROW, REC_CNT, REC_EQ, REC_TOK, REC_EV, N, WHY, OUT):
    """Run ticks ``i0 .. i1-1``; returns (status, tick index):

    * DONE at ``i1``; FULL_RECORDS when a record array is nearly full (at a tick boundary);
    * SETTLE at a tick whose first part (``Engine.settle``: the day roll, fills, orders) the engine must run
      first, nothing of it done here: call again with ``settled`` = that tick;
    * HANDBACK at a tick the engine must run whole, nothing of it done here;
    * TICKER: stock ``OUT[0]`` of the tick passed every gate (an intent) or met the day's first daily-loss halt:
      the engine decides it (``DecisionChain.decide_ticker`` with score ``OUT[1]`` and cutoff ``OUT[2]``), then
      call again with ``resume_k`` = that stock: the tick goes on with the next one;
    * BASKET: basket ``OUT[0]`` fires unblocked (or meets the daily-loss halt): the engine routes it
      (``BasketRouting.route_basket``), then call again with ``resume_b`` = that basket.

    ``WHY[0]`` says why it stopped. ``due`` keeps the tick's due tickers across a TICKER return."""
    n_stocks = K.shape[0]
    n_baskets = B.shape[0]
    cap_rows = REC_ROW.shape[0] - 4 * n_stocks - 8
    cap_cnt = REC_CNT.shape[0] - 8 * n_stocks - 8
    LEG0 = LEG.copy()
    for i in range(i0, i1):
        t = float(tick_t[i])
        bar = tick_bar[i]
        minute = float(tick_t[i] // 60)
        resuming = i == i0 and (resume_k >= 0 or resume_b >= 0)
        if not resuming:
            if N[R_ROWS] >= cap_rows or N[R_COUNTS] >= cap_cnt or N[R_EQUITY] >= REC_EQ.shape[0] - 2 or \
                    N[R_TOKENS] >= REC_TOK.shape[0] - 8 or N[R_EVENTS] >= REC_EV.shape[0] - 4 * n_stocks:
                return FULL_RECORDS, i
            # ---- the engine has work only it does: an open order or live intent, a new New York date
            if S[S_NEED_FULL] != 0.0:
                WHY[0] = WHY_FULL
                return HANDBACK, i
            if i != settled and S[S_NEED_PY] != 0.0:
                WHY[0] = WHY_PYTHON
                return SETTLE, i
            if i != settled and tick_day[i] != S[S_SOD_DAY]:
                WHY[0] = WHY_DAY
                return SETTLE, i
            # ---- broker sync: the bracket legs against the bars that closed since they were last checked
            if i != settled:
                LEG0[:, :] = LEG
                for q in range(int(S[S_N_LEGS])):
                    start = max(LEG[q, L_ACTIVE], LEG[q, L_CHECKED] + 1)
                    lo = np.searchsorted(ts, int(start))
                    hi = bar + 1
                    if hi <= lo:
                        continue
                    j = int(LEG[q, L_COL])
                    hit, _, _ = first_bracket_hit(open_[lo:hi, j], high[lo:hi, j], low[lo:hi, j], LEG[q, L_STOP],
                                                  LEG[q, L_TP], 0.0)
                    if hit >= 0:  # the simulated broker fills it: the engine's part of the tick
                        LEG[:, :] = LEG0
                        WHY[0] = WHY_LEG
                        return SETTLE, i
                    LEG[q, L_CHECKED] = float(ts[hi - 1])
        if tick_rth[i]:
            fresh = bar >= 0 and t - (ts[bar] + BAR_S) <= MAX_OBS_AGE_S
            if not resuming:
                # ---- Bench events: a volume spike on the last bar
                if fresh:
                    for k in range(n_stocks):
                        if K[k, K_TIER] != gates.TIER_BENCH:
                            continue
                        sp = spike_a[bar, int(K[k, K_COL])]
                        if not sp >= p[P_VOL_SPIKE_EVENT]:
                            continue
                        if K[k, K_EVENT] < 0:
                            _event(REC_EV, N, i, EV_NOTE, k)
                            K[k, K_EVENT] = bar
                for k in range(n_stocks):
                    if K[k, K_TIER] == gates.TIER_BENCH:
                        due[k] = K[k, K_EVENT] >= 0
                    else:
                        due[k] = ticker_due(K[k, K_LAST], t, K[k, K_INTERVAL], JITTER_S)
            # the account, as the first ticker past its cutoff builds it (again after the engine made an intent)
            have_account = False
            equity = 0.0
            exposure = 0.0
            current_risk = 0.0
            sod = 0.0
            k_start = 0
            if i == i0 and resume_k >= 0:
                k_start = resume_k + 1
            if i == i0 and resume_b >= 0:
                k_start = n_stocks
            for k in range(k_start, n_stocks):
                if not due[k]:
                    continue
                tier = int(K[k, K_TIER])
                j = int(K[k, K_COL])
                # ---- the token bucket of the ticker's tier
                m = minute_of(t)
                if S[S_TOK_MIN] != S[S_TOK_MIN] or needs_refill(m, int(S[S_TOK_MIN])):
                    S[S_TOK_MIN] = m
                    S[S_LEFT_A] = S[S_CAP_A]
                    S[S_LEFT_B] = S[S_CAP_B]
                    S[S_LEFT_R] = S[S_CAP_R]
                if TS[0, TS_PRESENT] + TS[1, TS_PRESENT] + TS[2, TS_PRESENT] > 0 and S[S_STATS_MIN] != m:
                    _emit_tokens(S, TS, REC_TOK, N)
                S[S_STATS_MIN] = m
                TS[tier, TS_PRESENT] = 1.0
                TS[tier, TS_REQ] += 1
                bucket = bucket_of_tier(tier)
                own = S[S_LEFT_A + bucket]
                second = int(t) % 60
                got = take_token(own, S[S_LEFT_R], tier, second, p[P_RESERVE_FALLBACK] != 0.0, S[S_BORROW_S])
                if got == tokens.GRANT_OWN:
                    S[S_LEFT_A + bucket] -= 1
                    TS[tier, TS_GRANTED] += 1
                elif got == tokens.GRANT_BORROWED:
                    S[S_LEFT_R] -= 1
                    TS[tier, TS_GRANTED] += 1
                    TS[tier, TS_BORROWED] += 1
                else:
                    _record(summary, 0, k, 0, RATE_LIMITED, -1, np.nan, False, np.nan, False, np.nan, i, minute,
                            BK, REC_ROW, REC_CNT, N)
                    continue
                if K[k, K_EVENT] >= 0:
                    _event(REC_EV, N, i, EV_CLEAR, k)
                K[k, K_LAST] = t
                K[k, K_EVENT] = -1.0
                raw = score_a[bar, j] if fresh else np.nan
                if not fresh or raw != raw:
                    pr = close[bar, j] if fresh else np.nan
                    _record(summary, 1, k, 1, NO_DATA, bar if fresh else -1, pr, fresh, np.nan, False, np.nan, i,
                            minute, BK, REC_ROW, REC_CNT, N)
                    continue
                sp = spike_a[bar, j]
                if sp != sp:
                    sp = 0.0
                score = max(-1.0, min(1.0, raw))
                K[k, K_LAT_T] = t
                K[k, K_LAT_S] = score
                cutoff = cutoffs[int(tick_seg[i]), 1 if sp >= p[P_CUTOFF_HIGH_VOL_SPIKE] else 0]
                if check_cutoff(score, cutoff) != OK:
                    _record(summary, 2, k, 0, BELOW_CUTOFF, bar, close[bar, j], True, score, True, cutoff, i,
                            minute, BK, REC_ROW, REC_CNT, N)
                    continue
                if not have_account:
                    have_account = True
                    equity, sod, exposure, current_risk = _account(S, POS, BPOS, close, lv, bar)
                code = _decide(k, bar, score, close[bar, j], S, K, C, p, t, close, lv, sod, equity, exposure,
                               current_risk)
                if code == -1 or code == -2:
                    WHY[0] = WHY_ACTIONABLE if code == -1 else WHY_DAILY_LOSS
                    OUT[0] = k
                    OUT[1] = score
                    OUT[2] = cutoff
                    return TICKER, i
                if code == -3:
                    _evidence(i, k, t, S, K, p, REC_EV, N)
                    _row(REC_ROW, N, i, k, DECISION_EVIDENCE, OK, bar, score, cutoff)
                    continue
                _row(REC_ROW, N, i, k, DECISION_SUPPRESSED, code, bar, score, cutoff)
            # ---- the baskets: streaks over the members' latest scores
            b_start = resume_b + 1 if i == i0 and resume_b >= 0 else 0
            for b in range(b_start, n_baskets):
                m_count = 0
                while m_count < BM.shape[1] and BM[b, m_count] >= 0:
                    m_count += 1
                score_ts = np.empty(m_count)
                scores = np.empty(m_count)
                for q in range(m_count):
                    score_ts[q] = K[BM[b, q], K_LAT_T]
                    scores[q] = K[BM[b, q], K_LAT_S]
                counted = basket_members(score_ts, scores, t, p[P_BASKET_SIGNAL_MAX_AGE_S])
                n, ratio, mean = basket_figures(scores, counted)
                cond = basket_condition(n, ratio, mean, p[P_BASKET_MIN_SIGNALS], p[P_BASKET_NEG_RATIO],
                                        p[P_BASKET_MEAN_SCORE])
                streak = basket_streak(int(B[b, B_STREAK]), B[b, B_AT], int(B[b, B_SESSION]), cond, t,
                                       int(tick_day[i]), p[P_BASKET_STREAK_GAP_S])
                blocked = 0
                if basket_fires(cond, streak, p[P_BASKET_CONSECUTIVE_TICKS]):
                    # BasketRouting.route_basket: what stops the inverse ETF's intent, else the intent (the engine's)
                    etf = int(B[b, B_ETF])
                    conflict = False
                    for q in range(BC.shape[1]):
                        c = BC[b, q]
                        if c >= 0 and (C[c, C_HELD] > 0 or C[c, C_BROKER_HELD] > 0):
                            conflict = True
                    blocked = check_entry_blocks(p[P_PAUSED] != 0.0, t < S[S_PAUSE_UNTIL],
                                                 lock_holds(C[etf, C_PROTECT], t),
                                                 C[etf, C_HELD] > 0 or C[etf, C_BROKER_HELD] > 0, True, conflict,
                                                 C[etf, C_LIVE_INTENT] > 0)
                    if blocked == OK:
                        if not have_account:
                            have_account = True
                            equity, sod, exposure, current_risk = _account(S, POS, BPOS, close, lv, bar)
                        blocked = check_signal_risk_feasibility(
                            p, equity, sod, int(S[S_N_POS]), int(S[S_PEND_N]), _price(close, lv, bar, etf),
                            exposure, S[S_CASH], current_risk)
                        if blocked == RISK_DAILY_LOSS and not t < S[S_HALT_UNTIL]:
                            blocked = -1
                    if blocked == OK and check_etf_lock(C[etf, C_ETF_LOCK], t) != OK:
                        blocked = ETF_LOCK
                    if blocked == OK or blocked == -1:
                        WHY[0] = WHY_BASKET if blocked == OK else WHY_DAILY_LOSS
                        OUT[0] = b
                        return BASKET, i  # its streak untouched: the engine evaluates it again
                B[b, B_STREAK] = streak
                B[b, B_AT] = t
                B[b, B_SESSION] = tick_day[i]
                B[b, B_BLOCKED] = blocked
                B[b, B_EVAL_TICK] = i
                B[b, B_N] = n
                B[b, B_RATIO] = ratio
                B[b, B_MEAN] = mean
                B[b, B_COND] = 1.0 if cond else 0.0
        # ---- stop checks (the excursions of the positions; the driver reads them from the bars)
        if S[S_LAST_STOP] != S[S_LAST_STOP] or not t - S[S_LAST_STOP] < S[S_STOP_INTERVAL]:
            S[S_LAST_STOP] = t
            S[S_STOP_TICK] = i
        # ---- snapshots: the equity once a minute, the token counts of the minutes that ended
        if S[S_EQ_MIN] != minute:
            S[S_EQ_MIN] = minute
            e = N[R_EQUITY]
            REC_EQ[e, 0] = i
            REC_EQ[e, 1] = _equity(S, BPOS, close, lv, bar)
            REC_EQ[e, 2] = S[S_CASH]
            N[R_EQUITY] = e + 1
            S[S_EQ_TICK] = i
        if TS[0, TS_PRESENT] + TS[1, TS_PRESENT] + TS[2, TS_PRESENT] > 0 and S[S_STATS_MIN] < minute:
            _emit_tokens(S, TS, REC_TOK, N)
        S[S_LAST_TICK] = i
    return DONE, i1


@numba.njit(cache=True, nogil=True)
def _equity(S, BPOS, close, lv, bar):  # noqa: ANN001, ANN202
    """``SimBroker.get_account``'s equity: cash plus the broker's positions at their marks, in symbol order."""
    total = 0.0
    for q in range(int(S[S_N_BPOS])):
        total += BPOS[q, BP_QTY] * _mark(close, lv, bar, int(BPOS[q, BP_COL]), BPOS[q, BP_AVG])
    return S[S_CASH] + total


@numba.njit(cache=True, nogil=True)
def _account(S, POS, BPOS, close, lv, bar):  # noqa: ANN001, ANN202
    """``Accounts.account_state`` as the risk rules read it: (equity, start-of-day equity, exposure, concurrent
    risk). Equity sums the broker's positions in symbol order, exposure and risk the book's in its order, as the
    engine's sums do (a float sum depends on its order)."""
    equity = _equity(S, BPOS, close, lv, bar)
    sod = S[S_SOD_EQ] if S[S_SOD_EQ] == S[S_SOD_EQ] else equity
    value = 0.0
    stop_total = 0.0
    for q in range(int(S[S_N_POS])):
        px = _mark(close, lv, bar, int(POS[q, P_COL]), POS[q, P_AVG])
        value += POS[q, P_QTY] * px
        stop_total += position_stop_risk(POS[q, P_QTY], px, POS[q, P_STOP_LEVEL], POS[q, P_AVG], 0.0)
    return equity, sod, value + S[S_PEND_NOTIONAL], concurrent_risk(equity, stop_total)


@numba.njit(cache=True, nogil=True)
def _emit_tokens(S, TS, REC_TOK, N):  # noqa: ANN001, ANN202
    for tier in range(3):
        if TS[tier, TS_PRESENT] == 0:
            continue
        e = N[R_TOKENS]
        REC_TOK[e, 0] = S[S_STATS_MIN]
        REC_TOK[e, 1] = tier
        REC_TOK[e, 2] = TS[tier, TS_REQ]
        REC_TOK[e, 3] = TS[tier, TS_GRANTED]
        REC_TOK[e, 4] = TS[tier, TS_BORROWED]
        N[R_TOKENS] = e + 1
        TS[tier, TS_REQ] = 0
        TS[tier, TS_GRANTED] = 0
        TS[tier, TS_BORROWED] = 0
        TS[tier, TS_PRESENT] = 0


@numba.njit(cache=True, nogil=True)
def _row(REC_ROW, N, i, k, decision, reason, bar, score, cutoff):  # noqa: ANN001, ANN202
    n = N[R_ROWS]
    REC_ROW[n, ROW_TICK] = i
    REC_ROW[n, ROW_STOCK] = k
    REC_ROW[n, ROW_DECISION] = decision
    REC_ROW[n, ROW_REASON] = reason
    REC_ROW[n, ROW_BAR] = bar
    REC_ROW[n, ROW_SCORE] = score
    REC_ROW[n, ROW_CUTOFF] = cutoff
    N[R_ROWS] = n + 1


@numba.njit(cache=True, nogil=True)
def _record(summary, slot, k, decision, reason, bar, price, has_price, score, has_score, cutoff, i, minute,  # noqa: ANN001, ANN202
            BK, REC_ROW, REC_CNT, N):
    """A decision that never passed the cutoff: a summary bucket, or (full log) its own row."""
    if summary:
        _count(BK, k, slot, i, minute, bar, price, has_price, score, has_score, REC_CNT, N)
    else:
        _row(REC_ROW, N, i, k, decision, reason, bar, score, cutoff)


def drain_buckets(BK: np.ndarray, REC_CNT: np.ndarray, N: np.ndarray) -> None:
    """Every open summary bucket into the records (before the engine runs a part of a tick, and at a flush)."""
    for k in range(BK.shape[0]):
        for r in range(BK.shape[1]):
            if BK[k, r, BK_N] > 0:
                _emit_bucket(BK, k, r, REC_CNT, N)
