"""KPIs (rules §11) computed from SQLite rows, over any window, with a breakdown by tier and by basket.

Signals: generated vs suppressed by reason, strong-signal rate (|score| >= cutoff + 0.2), flip-flops (sign
reversals of one symbol's actionable signals inside 10 minutes), MAE/MFE of actionable signals over a horizon
(default 30 min, along the prices the decision log recorded for that symbol afterwards), direction-lock hits.
Trades: realised P&L (``pnl_realized``), win rate, profit factor, MAE/MFE medians, stop-out rate. Tokens:
overflow per tier per minute. LLM: calls and spend. Equity: max drawdown (on account equity) and Sharpe.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from statistics import median
from typing import TYPE_CHECKING, Any

from core.clock import NY, trading_dates
from core.metrics.figures import enough_sessions, flip_flops, max_drawdown, sharpe, signal_excursion, trade_metrics
from core.state.decisions import rows_sql
from core.state.store import Store, iso

if TYPE_CHECKING:
    from core.config import Settings
    from core.universe import Universe

STRONG_MARGIN = 0.2  # a strong signal clears its cutoff by this much
DEFAULT_HORIZON_S = 1800  # how far after an actionable signal its MAE/MFE is measured
TIERS = ("A", "B", "Bench")


def _median(xs: list[float]) -> float:
    return float(median(xs)) if xs else 0.0


def trade_kpis(trades: list[Mapping[str, Any]]) -> dict[str, float]:
    """Realised P&L (``pnl_realized``: the sum of the trades' own ``pnl``), the trade metrics, MAE/MFE medians
    and the stop-out rate of closed trades."""
    out: dict[str, Any] = trade_metrics([t["pnl"] for t in trades])
    n = len(trades)
    out["pnl_realized"] = round(sum(t["pnl"] for t in trades), 6)
    out["mae_median"] = _median([t["mae"] for t in trades])
    out["mfe_median"] = _median([t["mfe"] for t in trades])
    out["stop_outs"] = sum(1 for t in trades if t["exit_reason"] == "stop_loss")
    out["stop_out_rate"] = out["stop_outs"] / n if n else 0.0
    return out


def signal_kpis(rows: list[Mapping[str, Any]], paths: Mapping[str, tuple[list[float], list[float]]],
                horizon_s: int = DEFAULT_HORIZON_S, strong_margin: float = STRONG_MARGIN) -> dict[str, Any]:
    """The decision-log KPIs of ``rows`` (decisions in time order, as ``core.state.decisions.rows_sql`` gives them:
    a row stands for ``n`` decisions, 1 when absent). ``paths``: symbol -> (epoch seconds, prices) of every
    priced decision of that symbol, sorted, reaching ``horizon_s`` past the last row.

    A decision with a score has a cutoff too, except in a summary count (``core.state.decisions``): those never passed
    their cutoff, so they count as scored and are never strong."""
    generated = [r for r in rows if r["decision"] != "skipped"]
    acts = [r for r in generated if r["decision"] == "actionable"]
    reasons: Counter[str] = Counter()
    for r in generated:
        if r["decision"] == "suppressed":
            reasons[r["reason"] or "?"] += r.get("n", 1)
    scored = [r for r in generated if r["score"] is not None]
    n_scored = sum(r.get("n", 1) for r in scored)
    strong = sum(r.get("n", 1) for r in scored
                 if r["cutoff"] is not None and abs(r["score"]) >= r["cutoff"] + strong_margin - 1e-9)
    times = [(r["symbol"], datetime.fromisoformat(r["ts"]).timestamp(), r["score"] or 0.0) for r in acts]
    flips = flip_flops(times)
    maes, mfes = [], []
    for (sym, t, score), r in zip(times, acts, strict=True):
        ts, px = paths.get(sym, ([], []))
        lo, hi = bisect_right(ts, t), bisect_right(ts, t + horizon_s)
        if not r["price"] or lo >= hi:
            continue  # nothing seen after it yet
        mae, mfe = signal_excursion(r["price"], px[lo:hi], 1 if score > 0 else -1)
        maes.append(mae)
        mfes.append(mfe)
    return {
        "generated": sum(r.get("n", 1) for r in generated), "actionable": len(acts),
        "suppressed": sum(reasons.values()), "suppressed_by_reason": dict(reasons.most_common()),
        "strong": strong, "strong_rate": strong / n_scored if n_scored else 0.0,
        "flip_flops": flips, "flip_flop_rate": flips / len(acts) if acts else 0.0,
        "signal_mae_median": _median(maes), "signal_mfe_median": _median(mfes), "signals_measured": len(maes),
        "direction_lock_hits": reasons.get("direction_lock", 0),
    }


def token_overflow(store: Store, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
    """Per tier: requests, denials, overall overflow rate and the worst minute's rate (denied / requested).
    Summed by SQLite (the protections ask after every fill), tiers in the order they first appear."""
    out: dict[str, dict[str, float]] = {}
    for r in store.query(
            "SELECT tier, SUM(COALESCE(requested, 0)) AS requested, "
            "SUM(COALESCE(requested, 0) - COALESCE(granted, 0)) AS denied, SUM(COALESCE(borrowed, 0)) AS borrowed, "
            "MAX(CASE WHEN requested > 0 THEN (requested - COALESCE(granted, 0)) * 1.0 / requested ELSE 0.0 END) "
            "AS worst FROM token_stats WHERE minute > ? AND minute <= ? GROUP BY tier ORDER BY MIN(rowid)",
            (iso(minute_ny(start)), iso(minute_ny(end)))):
        out[r["tier"]] = {"requested": r["requested"], "denied": r["denied"], "borrowed": r["borrowed"],
                          "overflow_rate": r["denied"] / r["requested"] if r["requested"] else 0.0,
                          "overflow_max_minute": max(0.0, r["worst"])}
    return out


def overflow_of(counts: list[tuple[int | None, int | None]]) -> dict[str, float]:
    """``token_overflow``'s requests and worst minute of one tier from its (requested, granted) per minute, as the
    query sums them (the protections' windows kept in memory: ``core.engine.protect``)."""
    requested, worst = 0, 0.0  # MAX over the minutes, then at least 0.0: the same as starting from 0.0
    for r, g in counts:
        if r:
            requested += r
            if r > 0:
                d = (r - (g or 0)) * 1.0 / r
                if d > worst:
                    worst = d
    return {"requested": requested, "overflow_max_minute": worst}


def minute_ny(ts: datetime) -> datetime:
    """The New York minute of ``ts``: the token counts' key (``token_stats.minute``)."""
    return ts.astimezone(NY).replace(second=0, microsecond=0)


def llm_usage(store: Store, start: datetime | None = None, end: datetime | None = None) -> dict[str, float]:
    """LLM calls that reached the model, and their spend, in (start, end] (queued and refused ones are not calls)."""
    try:
        row = store.one("SELECT COALESCE(SUM(called), 0) AS n, COALESCE(SUM(cost), 0) AS spend FROM llm_calls "
                        "WHERE ts > ? AND ts <= ?", _bounds(start, end))
    except sqlite3.OperationalError:  # a read-only view of a database made before the call log existed
        row = None
    return {"llm_calls": int(row["n"]) if row else 0, "llm_spend": float(row["spend"]) if row else 0.0}


def _bounds(start: datetime | None, end: datetime | None) -> tuple[str, str]:
    """ISO bounds for ``ts > ? AND ts <= ?``; an open end takes everything."""
    return iso(start) if start else "", iso(end) if end else "9999"


def equity_kpis(store: Store, start: datetime | None = None,
                end: datetime | None = None) -> dict[str, float | None]:
    """Max drawdown on account equity and the Sharpe of daily closes inside the window; the Sharpe is None with
    fewer sessions than ``figures.MIN_ANNUALISED_SESSIONS`` (annualising a few days says nothing)."""
    rows = store.query("SELECT ts, equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts", _bounds(start, end))
    closes: dict[Any, float] = {}
    times = [datetime.fromisoformat(r["ts"]) for r in rows]
    if all(t.tzinfo is not None for t in times):  # one New York date per UTC hour (core.clock.trading_dates)
        for day, r in zip(trading_dates(times), rows, strict=True):  # the last snapshot of each New York date
            closes[day] = r["equity"]
    else:
        for t, r in zip(times, rows, strict=True):
            closes[t.astimezone(NY).date()] = r["equity"]
    days = list(closes.values())
    rets = [b / a - 1 for a, b in zip(days, days[1:], strict=False) if a]
    return {"max_drawdown": max_drawdown([r["equity"] for r in rows]),
            "sharpe": sharpe(rets, 252) if enough_sessions(len(days)) else None}


def compute_kpis(store: Store, start: datetime, end: datetime, *, tiers: Mapping[str, str] | None = None,
                 baskets: Mapping[str, tuple[str, ...]] | None = None, horizon_s: int = DEFAULT_HORIZON_S,
                 strong_margin: float = STRONG_MARGIN) -> dict[str, Any]:
    """Every rules §11 KPI over (start, end], overall and broken down by tier and by basket.

    ``tiers``: symbol -> tier for trades (signal rows carry their own tier). ``baskets``: basket name ->
    its member symbols plus its inverse ETF (the basket's own trades)."""
    lo, hi = iso(start), iso(end)
    # both forms of the decision log (core.state.decisions): a summary bucket adds its count, and its price at its
    # first and last tick to the paths, which gives the same extremes over any window as its full rows
    src, params = rows_sql(lo, hi)
    rows = store.query(f"SELECT ts, symbol, tier, score, cutoff, decision, reason, price, n FROM {src} "
                       "ORDER BY ts, id", params)
    act_syms = sorted({r["symbol"] for r in rows if r["decision"] == "actionable"})
    paths: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    if act_syms:
        src, params = rows_sql(lo, iso(end + timedelta(seconds=horizon_s)))
        for r in store.query(
                f"SELECT symbol, ts, price FROM {src} WHERE price IS NOT NULL AND symbol IN "
                f"({','.join('?' * len(act_syms))}) ORDER BY ts, id", (*params, *act_syms)):
            p = paths[r["symbol"]]
            p[0].append(datetime.fromisoformat(r["ts"]).timestamp())
            p[1].append(r["price"])
    trades = store.query("SELECT symbol, kind, pnl, mae, mfe, exit_reason FROM trades WHERE exit_ts > ? AND "
                         "exit_ts <= ? ORDER BY id", (lo, hi))

    def group(sig: list[Mapping[str, Any]], trd: list[Mapping[str, Any]]) -> dict[str, Any]:
        out = signal_kpis(sig, paths, horizon_s, strong_margin)
        out.update({f"trade_{k}" if k in ("mae_median", "mfe_median") else k: v for k, v in trade_kpis(trd).items()})
        return out

    overall = group(rows, trades)
    overall.update(equity_kpis(store, start, end))
    overall.update(llm_usage(store, start, end))
    tokens = token_overflow(store, start, end)
    by_tier: dict[str, dict[str, Any]] = {}
    tiers = tiers or {}
    for tier in TIERS:
        sig = [r for r in rows if r["tier"] == tier]
        trd = [t for t in trades if tiers.get(t["symbol"]) == tier]
        if sig or trd or tier in tokens:
            by_tier[tier] = group(sig, trd)
    for tier, figs in tokens.items():
        by_tier.setdefault(tier, {}).update(figs)
    by_basket: dict[str, dict[str, Any]] = {}
    for name, members in (baskets or {}).items():
        m = set(members)
        sig = [r for r in rows if r["symbol"] in m]
        trd = [t for t in trades if t["symbol"] in m]
        if sig or trd:
            by_basket[name] = group(sig, trd)
    a = tokens.get("A", {})
    overall["tier_a_overflow_max"] = a.get("overflow_max_minute", 0.0)
    return {"start": lo, "end": hi, "horizon_s": horizon_s, "all": overall, "by_tier": by_tier,
            "by_basket": by_basket}


def universe_maps(universe: Universe) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """symbol -> tier, and basket -> its members plus its inverse ETF, for ``compute_kpis``."""
    tiers = {sym: tier for tier, syms in universe.tiers.items() for sym in syms}
    return tiers, {b.name: (*b.members, b.inverse_etf) for b in universe.baskets}


def kpi_report(store: Store, settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """``compute_kpis`` with the configured universe, horizon and strong-signal margin."""
    tiers, baskets = universe_maps(settings.universe)
    return compute_kpis(store, start, end, tiers=tiers, baskets=baskets, horizon_s=settings.kpi_horizon_s,
                        strong_margin=settings.kpi_strong_margin)


def summary(store: Store) -> dict[str, Any]:
    """Whole-history trade and equity figures (the research report and the trade-history header)."""
    out: dict[str, Any] = trade_kpis(store.query("SELECT pnl, mae, mfe, exit_reason FROM trades ORDER BY id"))
    out.update(equity_kpis(store))
    return out
