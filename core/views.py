"""Read-only views of the database for the UI pages (rules §13).

Pages call these with a read-only ``Store``; nothing here writes or needs the
running engine, so a second browser tab or a viewer process shows the same
figures the engine wrote.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.bounds import BY_PARAM
from core.clock import NY, UTC, sessions_between, trading_date
from core.config import LiveParams, Settings, configured_in, validate_param_changes
from core.exports import to_csv_bytes
from core.metrics import display, kpi, llm_usage
from core.metrics.display import NA
from core.metrics.display import money as money  # re-exported for the pages
from core.rules.protections import RULES, setting_value
from core.rules.risk import KELLY_MIN_TRADES, kelly_margin
from core.state.caps import GLOBAL, cap_key
from core.state.decisions import decision_counts, whole_history_counts
from core.state.protections import DAILY_LOSS, active_protections
from core.state.store import Store

OPEN_ORDER_STATUSES = ("new", "accepted", "pending_new", "partially_filled", "submitting")


TIME_COLUMNS = ("ts", "when", "fired_at", "until", "pause_until", "released_at",
                "created_at", "decided_at", "expires_at", "submitted_at", "updated_at", "entry_ts", "exit_ts",
                "opened_at", "applied_at", "minute")


def frame(store: Store, sql: str, params: Any = (), *, local_times: bool = True) -> pd.DataFrame:
    """Rows as a DataFrame; ISO timestamps shown as New York wall time (what a US-equities trader reads)."""
    df = pd.DataFrame(store.query(sql, params))
    return ny_wall_times(df) if local_times else df


def ny_wall_times(df: pd.DataFrame, columns: tuple[str, ...] = TIME_COLUMNS) -> pd.DataFrame:
    """A copy of ``df`` whose time columns (ISO text or timestamps, UTC when naive) are New York wall time text,
    ``2025-03-03 10:00:00``: the zone of the pages' charts. CSV files keep UTC (``with_ny_times``)."""
    if df.empty:
        return df
    df = df.copy()
    for col in [c for c in columns if c in df.columns]:
        parsed = pd.to_datetime(df[col], utc=True, format="ISO8601", errors="coerce")
        df[col] = parsed.dt.tz_convert(NY).dt.strftime("%Y-%m-%d %H:%M:%S").where(parsed.notna(), None)
    return df


def percent(v: float | None, digits: int = 0, *, signed: bool = False) -> str:
    """A rate as a page shows it; no value (no closed trade yet) is "–", never 0 %; never "-0%"."""
    return display.percent(v, digits, signed=signed)


def factor(v: float | None) -> str:
    """A profit factor as a page shows it: "–" with no trade and with no losing trade (gross win / no loss has no
    figure; the research metrics report it as null, the README says "–")."""
    return NA if v is None or math.isinf(v) or v != v else f"{v:.2f}"


def ny_text(ts: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A moment as New York wall time."""
    return ts.astimezone(NY).strftime(fmt)


# ---------------------------------------------------------------- live signals
# The latest-score table and the decision stream show full rows: the live engine writes every decision as one
# (core.state.decisions); the counts below read both forms.
def latest_by_ticker(store: Store) -> pd.DataFrame:
    """The newest scored decision per ticker (skipped/no-data rows only when nothing else exists)."""
    # one index seek per symbol (a loose scan of signals_symbol_ts for the symbols, then each one's newest row),
    # not a GROUP BY over a year of decisions (0.4 s on 886k rows; issue 17)
    return frame(store, """
        WITH RECURSIVE syms(symbol) AS (
            SELECT MIN(symbol) FROM signals
            UNION ALL SELECT (SELECT MIN(symbol) FROM signals WHERE symbol > syms.symbol) FROM syms
            WHERE syms.symbol IS NOT NULL)
        SELECT s.symbol, s.tier, s.ts, s.score, s.cutoff, s.decision, s.reason, s.action, s.price, s.vol_spike
        FROM syms JOIN signals s ON s.id = (
            SELECT id FROM signals WHERE symbol = syms.symbol AND decision != 'skipped' ORDER BY ts DESC LIMIT 1)
        ORDER BY CASE s.tier WHEN 'A' THEN 0 WHEN 'B' THEN 1 ELSE 2 END, s.symbol""")


def decision_stream(store: Store, limit: int = 200, decision: str | None = None) -> pd.DataFrame:
    where = "WHERE decision != 'skipped'" if decision is None else "WHERE decision = ?"
    params: tuple[Any, ...] = () if decision is None else (decision,)
    return frame(store, f"""
        SELECT ts, symbol, tier, score, cutoff, decision, reason, action, price
        FROM signals {where} ORDER BY id DESC LIMIT {int(limit)}""", params)


def suppression_counts(store: Store, since: datetime | None = None) -> pd.DataFrame:
    """Suppressed decisions per reason (the reason chart), most frequent first, from both forms of the log."""
    if since is None:  # whole history: one aggregate per form (the live page's chart, every refresh)
        counts = whole_history_counts(store, "reason", decision="suppressed")
    else:
        counts = decision_counts(store, "reason", "decision='suppressed'", start=since.isoformat(), bounds="[)")
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))
    return pd.DataFrame({"reason": [r for r, _ in rows], "n": [n for _, n in rows]}) if rows else pd.DataFrame()


def signal_totals(store: Store) -> dict[str, int]:
    """Decisions per decision kind, from both forms of the log."""
    return whole_history_counts(store, "decision")


# ---------------------------------------------------------------- approvals
def pending_intents(store: Store, now: datetime, wall_now: float | None = None, speed: float = 1.0) -> pd.DataFrame:
    """Intents waiting for a decision, oldest first; ``expires_in_s`` is what really remains, in wall seconds.

    An intent of the live app carries a wall-clock deadline (``approve_by``): remaining = approve_by - wall_now.
    One without it (written by an older version) expires on the market clock ``now``, which runs ``speed`` times
    faster than the wall: remaining = market seconds left / speed.
    """
    df = frame(store, """
        SELECT id, created_at, symbol, side, qty, price, notional, kind, reason, risk_after, expires_at, approve_by,
               source
        FROM intents WHERE status='pending' ORDER BY created_at""", local_times=False)
    if df.empty:
        return df
    exp = pd.to_datetime(df["expires_at"], utc=True, format="ISO8601")
    market_left = (exp - pd.Timestamp(now)).dt.total_seconds() / max(speed, 1e-9)
    approve_by = pd.to_numeric(df["approve_by"], errors="coerce")
    wall_left = approve_by - wall_now if wall_now is not None else pd.Series(float("nan"), index=df.index)
    df["expires_in_s"] = wall_left.where(approve_by.notna() & (wall_now is not None), market_left)
    return df


def countdown_text(seconds: float) -> str:
    """Seconds left as m:ss, rounded down (never promises a second that is not there), 0:00 once passed."""
    left = max(0, int(seconds // 1)) if seconds == seconds else 0
    return f"{left // 60}:{left % 60:02d}"


def pending_count(store: Store) -> int:
    """How many intents wait for a decision (the badge in the navigation and the sidebar)."""
    return int(store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending'") or 0)


def recent_decisions(store: Store, limit: int = 20) -> pd.DataFrame:
    """The newest decided intents (approved and sent, rejected, refused by the risk re-check, expired), newest first:
    what a click on the Approvals page did stays readable here after the page refreshes."""
    return frame(store, f"""
        SELECT decided_at AS "when", id, symbol, side, qty, status, COALESCE(decided_by, 'engine') AS "by", note
        FROM intents WHERE status != 'pending' ORDER BY COALESCE(decided_at, created_at) DESC LIMIT {int(limit)}""")


def command_results(store: Store, limit: int = 20) -> pd.DataFrame:
    return frame(store, f"""
        SELECT id, created_at, kind, payload, who, status, result, applied_at
        FROM commands ORDER BY id DESC LIMIT {int(limit)}""")


# ---------------------------------------------------------------- baskets
def basket_health(store: Store, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    states = {r["name"]: r for r in store.query("SELECT * FROM basket_state")}
    held = {r["symbol"] for r in store.query("SELECT symbol FROM positions WHERE qty > 0")}
    out = []
    for b in settings.universe.baskets:
        st = states.get(b.name, {})
        lock = store.one("SELECT value, expires_at FROM kv WHERE key=?", (f"etf_lock:{b.inverse_etf}",))
        lock_left = None
        if lock and lock["expires_at"] > now.timestamp():
            lock_left = round(lock["expires_at"] - now.timestamp(), 1)
        last_intent = None
        if st.get("last_intent_id"):
            last_intent = store.one("SELECT id, created_at, symbol, qty, status FROM intents WHERE id=?",
                                    (st["last_intent_id"],))
            if last_intent:
                when = datetime.fromisoformat(last_intent["created_at"]).astimezone(NY)
                last_intent["created_at"] = f"{when:%Y-%m-%d %H:%M:%S} ET"
        out.append({
            "name": b.name, "inverse_etf": b.inverse_etf, "members": list(b.members),
            "scores": json.loads(st["members_json"]) if st.get("members_json") else {},
            "n_signals": st.get("n_signals", 0), "negative_ratio": st.get("negative_ratio", 0.0),
            "mean_score": st.get("mean_score", 0.0), "condition": bool(st.get("condition", 0)),
            "consecutive": st.get("consecutive", 0), "needed": settings.basket_consecutive_ticks,
            "etf_lock_s": lock_left, "conflicts_held": sorted(held & set(b.conflicts)),
            "conflicts": list(b.conflicts), "blocked_by": st.get("blocked_by"), "last_intent": last_intent,
            "updated": st.get("ts"), "etf_held": b.inverse_etf in held,
            "thresholds": {"min_signals": settings.basket_min_signals, "neg_ratio": settings.basket_neg_ratio,
                           "mean_score": settings.basket_mean_score},
        })
    return out


# ---------------------------------------------------------------- risk
def risk_gauges(store: Store, settings: Settings, now: datetime) -> dict[str, Any]:
    raw = store.get_meta("portfolio_summary")
    summary: dict[str, Any] = json.loads(raw) if raw else {
        "current_risk_pct": 0.0, "max_risk_pct": settings.max_concurrent_risk, "risk_status": "safe",
        "daily_loss_pct": 0.0, "daily_loss_limit": settings.daily_loss_limit, "exposure_pct": 0.0,
        "max_exposure": settings.max_exposure, "open_positions": 0, "max_positions": settings.max_positions,
        "equity": settings.sim_start_cash, "remaining_capacity": settings.max_concurrent_risk,
    }
    buckets_raw = store.get_meta("token_buckets")
    left = json.loads(buckets_raw).get("left", {}) if buckets_raw else {}
    caps = {"A": settings.tier_a_tokens, "B": settings.tier_b_tokens, "Reserve": settings.reserve_tokens}
    tokens = {t: {"left": int(left.get(t, cap)), "capacity": cap} for t, cap in caps.items()}
    day = trading_date(now).isoformat()
    llm_calls = llm_usage.calls_today(store, now)
    m = kpi.summary(store)
    kelly = kelly_margin(m["win_rate"] or 0.0, m["payoff_ratio"] or 0.0, settings.risk_per_trade, m["trades"])
    cap_used = store.counter(cap_key(day, GLOBAL))
    return {"summary": summary, "tokens": tokens, "llm_calls": llm_calls, "llm_limit": settings.llm_daily_limit,
            "llm_spend": llm_usage.month_spend(store, now), "llm_budget": settings.llm_monthly_budget,
            "kpi": m, "kelly": kelly, "rth_cap_used": cap_used, "rth_cap": settings.rth_daily_cap}


def token_usage(store: Store, limit: int = 60) -> pd.DataFrame:
    return frame(store, f"""
        SELECT minute, tier, requested, granted, borrowed FROM token_stats
        ORDER BY minute DESC, tier LIMIT {int(limit)}""")


# ---------------------------------------------------------------- trade history
def orders(store: Store, limit: int = 500) -> pd.DataFrame:
    return frame(store, f"""
        SELECT submitted_at, updated_at, symbol, side, qty, type, status, filled_qty, filled_avg_price,
               client_order_id, broker_order_id, reason
        FROM orders ORDER BY submitted_at DESC LIMIT {int(limit)}""")


def fills(store: Store, limit: int = 500) -> pd.DataFrame:
    return frame(store, f"SELECT ts, symbol, side, qty, price, fee, client_order_id FROM fills "
                        f"ORDER BY ts DESC LIMIT {int(limit)}")


def positions(store: Store) -> pd.DataFrame:
    return frame(store, """
        SELECT symbol, qty, avg_price, opened_at, stop_price, take_profit_price, kind, high, low
        FROM positions WHERE qty > 0 ORDER BY symbol""")


OPEN_POSITION_COLUMNS = ("symbol", "qty", "avg_entry", "last_price", "market_value", "unrealized_pnl",
                         "unrealized_pct", "stop_price", "to_stop_pct", "take_profit_price", "to_take_profit_pct",
                         "age", "age_s", "opened_at", "kind", "price_at", "closing")


def open_positions(store: Store, now: datetime) -> pd.DataFrame:
    """The open positions as a trader reads them, at market time ``now`` (issue 17).

    * last_price: the engine's last mark for the symbol (``meta.position_marks``, the last completed bar's close,
      written with the portfolio gauges once a market minute); before the first mark, the last fill's price;
      ``price_at`` says which moment it is from;
    * market_value = qty x last; unrealized_pnl = (last - avg_entry) x qty (fees not included, as brokers show it);
      unrealized_pct = last / avg_entry - 1 (a fraction);
    * to_stop_pct = (last - stop) / last: how far the price may fall before the stop-loss leg fires;
      to_take_profit_pct = (take_profit - last) / last: how far it must rise to the take-profit (fractions of
      the last price; negative when the level is already crossed);
    * age: market time since the entry fill (``now`` is the market clock, not the wall clock);
    * closing: the reason and status of a close or exit being sent or open for the symbol ("" when none), so the
      page can offer Close only where nothing is closing yet.
    """
    rows = store.query("""
        SELECT symbol, qty, avg_price, opened_at, stop_price, take_profit_price, kind
        FROM positions WHERE qty > 0 ORDER BY symbol""")
    if not rows:
        return pd.DataFrame(columns=list(OPEN_POSITION_COLUMNS))
    raw = store.get_meta("position_marks")
    marks = json.loads(raw) if raw else {}
    closing: dict[str, str] = {}
    for r in store.query("""
            SELECT i.symbol, i.reason, i.status, o.status AS order_status FROM intents i
            LEFT JOIN orders o ON o.intent_id = i.id
            WHERE i.status IN ('submitting', 'submitted') AND i.side = 'sell'"""):
        if r["status"] == "submitting" or r["order_status"] in OPEN_ORDER_STATUSES:
            closing[r["symbol"]] = f"{r['reason']} ({r['order_status'] or r['status']})"
    out = []
    for r in rows:
        sym, qty, avg = r["symbol"], float(r["qty"]), float(r["avg_price"])
        last, at = marks.get("prices", {}).get(sym), marks.get("ts")
        if last is None:  # not marked yet (bought within this market minute): the last fill's price
            fill = store.one("SELECT price, ts FROM fills WHERE symbol=? ORDER BY ts DESC LIMIT 1", (sym,))
            last, at = (fill["price"], fill["ts"]) if fill else (avg, r["opened_at"])
        last = float(last)
        opened = _parse_ts(r["opened_at"])
        age_s = max(0.0, (now - opened).total_seconds()) if opened is not None else None
        stop, tp = r["stop_price"], r["take_profit_price"]
        out.append({
            "symbol": sym, "qty": qty, "avg_entry": avg, "last_price": last, "market_value": qty * last,
            "unrealized_pnl": (last - avg) * qty, "unrealized_pct": last / avg - 1.0 if avg else None,
            "stop_price": stop, "to_stop_pct": (last - stop) / last if stop and last else None,
            "take_profit_price": tp, "to_take_profit_pct": (tp - last) / last if tp and last else None,
            "age": _age_text(age_s), "age_s": age_s,
            "opened_at": ny_text(opened, "%Y-%m-%d %H:%M:%S") if opened is not None else r["opened_at"],
            "kind": r["kind"], "price_at": ny_text(_parse_ts(at), "%H:%M:%S") if _parse_ts(at) else None,
            "closing": closing.get(sym, ""),
        })
    return pd.DataFrame(out, columns=list(OPEN_POSITION_COLUMNS))


def _parse_ts(value: Any) -> datetime | None:
    try:
        ts = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _age_text(seconds: float | None) -> str:
    """2d 3h, 1h 05m, 7m 30s: market time held."""
    if seconds is None:
        return "?"
    s = int(seconds)
    d, h, m = s // 86_400, s % 86_400 // 3600, s % 3600 // 60
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s % 60:02d}s"


def equity_curve(store: Store) -> pd.DataFrame:
    df = frame(store, "SELECT ts, equity, cash, exposure FROM equity ORDER BY ts", local_times=False)
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601").dt.tz_convert(NY)
    return df


def trades(store: Store, *, local_times: bool = True) -> pd.DataFrame:
    return frame(store, local_times=local_times, sql="""
        SELECT id, symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, ret, mae, mfe, fees,
               exit_reason
        FROM trades ORDER BY id DESC""")


def with_ny_times(df: pd.DataFrame, columns: tuple[str, ...] = TIME_COLUMNS) -> pd.DataFrame:
    """A table for a CSV file: every time column as ISO 8601 UTC (``2025-03-03T15:00:00+00:00``) followed by
    ``<column>_ny``, the same moment as New York time with its offset (``2025-03-03T10:00:00-05:00``), the zone
    the pages show. Both are explicit, so a spreadsheet never has to guess the zone of a time."""
    out = df.copy()
    for col in [c for c in columns if c in out.columns]:
        parsed = pd.to_datetime(out[col], utc=True, format="ISO8601", errors="coerce")
        out[col] = _iso_texts(parsed).where(parsed.notna(), out[col])  # a value that is not a time stays as it was
        out.insert(out.columns.get_loc(col) + 1, f"{col}_ny", _iso_texts(parsed.dt.tz_convert(NY)))
    return out


def _iso_texts(ts: pd.Series) -> pd.Series:
    return ts.map(lambda t: t.isoformat() if pd.notna(t) else None)


TRADE_COLUMNS = ["id", "symbol", "kind", "qty", "entry_ts", "entry_price", "exit_ts", "exit_price", "pnl", "ret",
                 "mae", "mfe", "fees", "exit_reason"]


def trades_csv(store: Store) -> bytes:
    """The closed trades as CSV: times in UTC and, beside each, New York time as the page shows it."""
    df = trades(store, local_times=False)
    if df.empty:
        df = pd.DataFrame(columns=TRADE_COLUMNS)
    return to_csv_bytes(with_ny_times(df, ("entry_ts", "exit_ts")))  # a symbol like =cmd() is written as text


def notifications(store: Store, limit: int = 20) -> pd.DataFrame:
    return frame(store, f"SELECT ts, level, text FROM notifications ORDER BY id DESC LIMIT {int(limit)}")


def param_audit(store: Store, limit: int = 50) -> pd.DataFrame:
    return frame(store, f"SELECT ts, who, name, old, new, source FROM param_audit ORDER BY id DESC LIMIT {int(limit)}")


CHANGE_COLUMNS = ["when (ET)", "who", "setting", "change", "source"]


def changes(store: Store, limit: int = 100) -> pd.DataFrame:
    """What changed, and who changed it: the parameter audit, newest first, as the Risk page lists it. Times in
    New York (the pages' time zone); values as a trader reads them ("-0.02 → +0.03", "on"); ``source`` says
    what made the change (slider, switch, profile, research, protection, release, profile_expiry, command)."""
    rows = store.query("SELECT ts, who, name, old, new, source FROM param_audit ORDER BY id DESC LIMIT ?",
                       (int(limit),))
    out = [{"when (ET)": ny_text(datetime.fromisoformat(r["ts"]), "%Y-%m-%d %H:%M:%S") if r["ts"] else "–",
            "who": r["who"] or "–", "setting": r["name"],
            "change": f"{_audit_value(r['name'], r['old'])} → {_audit_value(r['name'], r['new'])}",
            "source": r["source"] or "–"} for r in rows]
    return pd.DataFrame(out, columns=CHANGE_COLUMNS)


REFUSED_COLUMNS = ["when (ET)", "who", "command", "payload", "why"]


def refused_commands(store: Store, limit: int = 20) -> pd.DataFrame:
    """Commands the engine refused (malformed, out of range, unknown), newest first: what was sent and why it was
    not applied. The payload is shown as text, cut short (it is whatever the sender wrote)."""
    rows = store.query("SELECT created_at, applied_at, who, kind, payload, result FROM commands WHERE status='failed' "
                       "ORDER BY id DESC LIMIT ?", (int(limit),))
    out = []
    for r in rows:
        ts = r["applied_at"] or r["created_at"]
        try:
            when = ny_text(datetime.fromisoformat(ts), "%Y-%m-%d %H:%M:%S") if ts else "–"
        except (TypeError, ValueError):
            when = str(ts)[:32]
        payload = str(r["payload"] or "")
        out.append({"when (ET)": when, "who": str(r["who"] or "–")[:64], "command": str(r["kind"])[:40],
                    "payload": payload[:120] + ("…" if len(payload) > 120 else ""),
                    "why": str(r["result"] or "").removeprefix("refused: ")})
    return pd.DataFrame(out, columns=REFUSED_COLUMNS)


def _audit_value(name: str, raw: str | None) -> str:
    """An audited value (JSON text) as shown: signed cutoffs, on/off switches, whole seconds."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return str(raw)
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        if name == "cutoff_delta":
            return f"{value:+.2f}"
        return f"{value:g} s" if name.endswith("_s") else f"{value:g}"
    return str(value)


def live_params(store: Store) -> dict[str, Any]:
    row = store.one("SELECT json FROM params WHERE id=1")
    return json.loads(row["json"]) if row else {}


# the live parameters a setting starts (LiveParams.from_settings): name -> Settings field
SETTING_OF_PARAM: dict[str, str] = {**{p: b.setting for p, b in BY_PARAM.items()}, "auto_mode": "auto_mode",
                                    "reserve_fallback": "reserve_fallback"}

# how the audit's ``source`` reads in "set ... on <date>"
SOURCE_WORDS = {"slider": "set with the slider", "switch": "set with the switch", "profile": "set by the profile box",
                "research": "applied from the Research page", "command": "set by a command",
                "protection": "set by a protection", "profile_expiry": "set when the relaxed profile expired",
                "env": "set from .env"}


@dataclass(frozen=True)
class EnvDifference:
    """A live parameter whose value differs from the one its setting gives (.env or the environment)."""

    param: str
    setting: str  # the variable, upper case
    live: Any
    configured: Any
    origin: str  # ".env" or "the environment"
    history: str  # where the live value came from, in words ("set with the slider on 2026-12-04 14:02 ET")

    def show(self, value: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        b = BY_PARAM.get(self.param)
        return b.show(value) if b is not None else str(value)

    @property
    def text(self) -> str:
        says = "says" if self.origin == ".env" else "gives"
        return f"{self.show(self.live)}, {self.history}; {self.origin} {says} {self.show(self.configured)}"


def env_differences(store: Store, settings: Settings) -> list[EnvDifference]:
    """The live parameters (as stored: they win over the settings once a database exists) that differ from what
    .env or the environment sets, each with the audit's last change of it. Settings left at their default are not
    compared: there is nothing configured to differ from."""
    live = live_params(store)
    # as a command stores it (rounded to 6 places): "Use .env value" must end the difference it reports
    configured = validate_param_changes({k: v for k, v in LiveParams.from_settings(settings).as_dict().items()
                                         if k in SETTING_OF_PARAM})
    out = []
    for param, setting in SETTING_OF_PARAM.items():
        origin = configured_in(setting)
        if origin is None or param not in live or live[param] == configured[param]:
            continue
        row = store.one("SELECT ts, who, source FROM param_audit WHERE name=? ORDER BY id DESC LIMIT 1", (param,))
        if row is None:
            history = "kept in the database since it was created (no change recorded)"
        else:
            when = datetime.fromisoformat(row["ts"]).astimezone(NY)
            words = SOURCE_WORDS.get(row["source"] or "command", f"set by {row['source']}")
            if row["source"] == "protection":
                words = f"set by protection {str(row['who']).removeprefix('protection:')}"
            history = f"{words} on {when:%Y-%m-%d %H:%M} ET"
        out.append(EnvDifference(param, setting.upper(), live[param], configured[param], origin, history))
    return out


def runtime_heartbeat(store: Store) -> dict[str, Any]:
    """The runtime's own heartbeat (pid, job errors, Redis status), written by its session job."""
    row = store.one("SELECT info FROM heartbeat WHERE name='runtime'")
    return json.loads(row["info"] or "{}") if row else {}


def heartbeat(store: Store) -> dict[str, Any]:
    row = store.one("SELECT ts, info FROM heartbeat WHERE name='tick'")
    if row is None:
        return {}
    return {"ts": row["ts"], **json.loads(row["info"] or "{}")}


# ---------------------------------------------------------------- protections
def protections(store: Store, now: datetime, limit: int = 50) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Active protections (with minutes left) and the recent firing history."""
    active = []
    for r in active_protections(store, now):
        until = datetime.fromisoformat(r["until"])
        active.append({**r, "releasable": r["rule"] != DAILY_LOSS,
                       "minutes_left": max(0, int((until - now).total_seconds() // 60)),
                       "fired_ny": ny_text(datetime.fromisoformat(r["fired_at"])), "until_ny": ny_text(until, "%H:%M")})
    history = frame(store, "SELECT id, rule, fired_at, why, old_json AS old, new_json AS new, pause_until, until, "
                           "released_at, released_by FROM protections ORDER BY id DESC LIMIT ?", (limit,))
    return active, history


def protection_rules(settings: Settings) -> pd.DataFrame:
    """The protection rules as the Risk page lists them: what fires each, over which window, and the least
    sample each condition is judged on (below it the rule does not fire)."""
    rows = [{"rule": r.name, "fires when": r.description,
             "window": f"{int(setting_value(r.window_s, settings)) // 60} min",
             "minimum sample": "; ".join(r.minimums(settings))} for r in RULES]
    rows.append({"rule": "Kelly figures (Risk gauges)", "fires when": "shown, and warns below a 1x margin",
                 "window": "all closed trades", "minimum sample": f"{KELLY_MIN_TRADES} closed trades, wins and losses"})
    return pd.DataFrame(rows, columns=["rule", "fires when", "window", "minimum sample"])


# ---------------------------------------------------------------- KPIs (rules §11)
KPI_WINDOWS = ("Last hour", "This session", "Last 24 hours", "Last 5 sessions")
SNAPSHOT_COLUMNS = ("generated", "actionable", "suppressed", "strong_rate", "flip_flops", "flip_flop_rate",
                    "signal_mae_median", "signal_mfe_median", "direction_lock_hits", "trades", "pnl_realized",
                    "stop_out_rate", "tier_a_overflow_max", "llm_calls", "max_drawdown")
LEGACY_SNAPSHOT_KEYS = {"pnl_realized": "pnl"}  # snapshots written before the two P&Ls were named apart


def kpi_window(choice: str, now: datetime) -> tuple[datetime, datetime]:
    """The (start, end] a KPI window choice means at market time ``now``."""
    if choice == "Last hour":
        return now - timedelta(hours=1), now
    if choice == "Last 24 hours":
        return now - timedelta(hours=24), now
    day = trading_date(now)
    if choice == "This session":
        first = day
    elif choice == "Last 5 sessions":
        first = sessions_between(day - timedelta(days=14), day)[-5]
    else:
        raise ValueError(f"unknown KPI window {choice!r}")
    start = datetime.combine(first, time(0), NY).astimezone(UTC)  # from the pre-market of that date
    return start, now


def kpi_tables(report: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """A ``kpi.compute_kpis`` result as tables: by tier, by basket, suppression reasons."""
    def table(groups: dict[str, dict[str, Any]], key: str) -> pd.DataFrame:
        rows = [{key: name, **{c: g.get(c) for c in (*SNAPSHOT_COLUMNS, "overflow_rate", "overflow_max_minute",
                                                      "requested", "denied", "borrowed") if c in g}}
                for name, g in groups.items()]
        return pd.DataFrame(rows)

    reasons = report["all"].get("suppressed_by_reason", {})
    return {"by_tier": table(report["by_tier"], "tier"), "by_basket": table(report["by_basket"], "basket"),
            "reasons": pd.DataFrame({"reason": list(reasons), "n": list(reasons.values())})}


def kpi_snapshots(store: Store, limit: int = 24 * 7) -> pd.DataFrame:
    """The hourly snapshots, newest last (rows written before snapshots held windowed KPIs are skipped)."""
    rows = []
    for r in reversed(store.query("SELECT ts, json FROM kpi_snapshots ORDER BY ts DESC LIMIT ?", (int(limit),))):
        data = json.loads(r["json"])
        if "all" in data:
            a = data["all"]
            rows.append({"ts": r["ts"], **{c: a.get(c, a.get(LEGACY_SNAPSHOT_KEYS.get(c, c)))
                                           for c in SNAPSHOT_COLUMNS}})
    df = pd.DataFrame(rows, columns=["ts", *SNAPSHOT_COLUMNS])
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601").dt.tz_convert(NY)
    return df


# ---------------------------------------------------------------- events and LLM calls (rules §6)
def events(store: Store, limit: int = 50) -> pd.DataFrame:
    """Recent filings and spike events with what the LLM gate made of them."""
    return frame(store, """
        SELECT e.created_at, e.symbol, e.kind, e.form, e.title, e.processed_at, c.status AS llm, c.sentiment,
               c.confidence, c.rationale, e.url
        FROM events e LEFT JOIN llm_calls c ON c.id = (SELECT MAX(id) FROM llm_calls WHERE event_id = e.id)
        ORDER BY e.created_at DESC LIMIT ?""", (int(limit),))


def llm_calls(store: Store, limit: int = 50) -> pd.DataFrame:
    return frame(store, """
        SELECT ts, symbol, kind, event_id, score, status, sentiment, confidence, rationale, error, prompt_tokens,
               completion_tokens, cost, latency_ms, done_at
        FROM llm_calls ORDER BY id DESC LIMIT ?""", (int(limit),))


# ---------------------------------------------------------------- long histories (issue 17: pages stay fast)
# Trade history reads a year of equity snapshots and 100k trades on every refresh: the figures are aggregated in
# SQL, the tables come a page at a time and the curve as at most ``MAX_CURVE_POINTS`` samples.
PAGE_ROWS = 500
MAX_CURVE_POINTS = 5_000


def money_short(x: float) -> str:
    """Dollars in at most about seven characters (a metric tile's width): $512.30, -$1.67k, $12.4M."""
    if x != x:  # NaN
        return "–"
    a = abs(x)
    sign = "-" if x < 0 else ""
    if a < 999.995:  # what rounds to $1,000.00 is shown as $1.00k
        return f"{sign}${a:.2f}"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div * 0.9995 or unit == "k":  # 999,950 is $1.00M, not $1000k
            v = a / div
            digits = f"{v:#.3g}".rstrip(".") if v < 999.5 else f"{v:,.0f}"  # three significant digits
            return f"{sign}${digits}{unit}"
    raise AssertionError(x)  # unreachable: the k row takes the rest


def trade_summary(store: Store) -> dict[str, Any]:
    """The Trade history header, aggregated in SQL: closed trades, realised P&L, win rate, profit factor (inf
    with wins and no loss, 0.0 without wins, None without trades), and max drawdown of account equity (as
    ``kpi.summary`` computes them: one pass over the ordered curve, the running peak by a window function)."""
    n, pnl, wins, gross_win, gross_loss = store.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(pnl), 0), COALESCE(SUM(pnl > 0), 0), COALESCE(SUM(CASE WHEN pnl > 0 "
        "THEN pnl END), 0), COALESCE(-SUM(CASE WHEN pnl < 0 THEN pnl END), 0) FROM trades").fetchone()
    dd = store.conn.execute(
        "SELECT MAX(CASE WHEN peak > 0 THEN (peak - equity) / peak ELSE 0 END) FROM (SELECT equity, "
        "MAX(equity) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) AS peak FROM equity)").fetchone()[0]
    # no trade: no win rate and no profit factor (None, shown "–"), as figures.trade_metrics
    pf = None if not n else gross_win / gross_loss if gross_loss > 0 else (float("inf") if wins else 0.0)
    return {"trades": int(n), "pnl_realized": float(pnl), "win_rate": wins / n if n else None, "profit_factor": pf,
            "max_drawdown": max(0.0, float(dd or 0.0))}


def page_count(rows: int, size: int = PAGE_ROWS) -> int:
    """Pages of ``size`` rows (one empty page when there is nothing)."""
    if size < 1:
        raise ValueError(f"page size must be >= 1, got {size}")
    return max(1, -(-int(rows) // size))


def _page(store: Store, sql: str, page: int, size: int, **kw: Any) -> pd.DataFrame:
    if page < 1 or size < 1:
        raise ValueError(f"page {page} of size {size}: both must be >= 1")
    return frame(store, f"{sql} LIMIT ? OFFSET ?", (int(size), (int(page) - 1) * int(size)), **kw)


def trades_page(store: Store, page: int = 1, size: int = PAGE_ROWS) -> pd.DataFrame:
    """Closed trades, newest first, page ``page`` (1-based) of ``size`` rows."""
    return _page(store, """
        SELECT id, symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, ret, mae, mfe, fees,
               exit_reason
        FROM trades ORDER BY id DESC""", page, size)


def orders_page(store: Store, page: int = 1, size: int = PAGE_ROWS) -> pd.DataFrame:
    """Orders, newest submission first, one page (``orders`` is the newest page)."""
    return _page(store, """
        SELECT submitted_at, updated_at, symbol, side, qty, type, status, filled_qty, filled_avg_price,
               client_order_id, broker_order_id, reason
        FROM orders ORDER BY submitted_at DESC""", page, size)


def fills_page(store: Store, page: int = 1, size: int = PAGE_ROWS) -> pd.DataFrame:
    """Fills, newest first, one page."""
    return _page(store, "SELECT ts, symbol, side, qty, price, fee, client_order_id FROM fills ORDER BY ts DESC",
                 page, size)


def row_count(store: Store, table: str) -> int:
    if table not in ("trades", "orders", "fills"):
        raise ValueError(f"row_count: unknown table {table!r}")
    return int(store.scalar(f"SELECT COUNT(*) FROM {table}") or 0)


def equity_curve_sampled(store: Store, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """The equity curve for a chart: every snapshot when there are at most ``max_points``, else the snapshots cut
    into equal runs (by count, so a bucket is the same stretch of market time, nights or not) keeping each run's
    lowest and highest equity, plus the very first and last snapshot. Dips and peaks stay drawn; at most
    ``max_points`` rows, bucketed in SQL (a year of snapshots never reaches Python)."""
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4, got {max_points}")
    n = int(store.scalar("SELECT COUNT(*) FROM equity") or 0)
    # one statement either way: with a bucket per snapshot (a short history) every snapshot is its bucket's min
    buckets = n if n <= max_points else (max_points - 2) // 2
    sql = """
        WITH b AS (SELECT ts, equity, (ROW_NUMBER() OVER (ORDER BY ts) - 1) * ? / ? AS k FROM equity)
        SELECT ts, equity FROM (
            SELECT ts, MIN(equity) AS equity FROM b GROUP BY k
            UNION SELECT ts, MAX(equity) FROM b GROUP BY k
            UNION SELECT * FROM (SELECT ts, equity FROM equity ORDER BY ts LIMIT 1)
            UNION SELECT * FROM (SELECT ts, equity FROM equity ORDER BY ts DESC LIMIT 1))
        ORDER BY ts"""
    params = (buckets, max(n, 1))
    df = frame(store, sql, params, local_times=False)
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601").dt.tz_convert(NY)
    return df


# ---------------------------------------------------------------- one ticker's session (issue 17: price chart)
def chart_session(now: datetime) -> tuple[datetime, datetime]:
    """(open, close) in UTC of the session a price chart shows at ``now``: today's once it has opened, else the
    last one before (a weekend or a pre-market look shows Friday's)."""
    from core.clock import previous_session, session_bounds

    day = trading_date(now)
    bounds = session_bounds(day)
    if bounds is None or bounds[0] > now:
        bounds = session_bounds(previous_session(day))
    assert bounds is not None  # previous_session returns a session
    return bounds[0].astimezone(UTC), bounds[1].astimezone(UTC)


def feed_session_bars(feed: Any, symbol: str, now: datetime) -> pd.DataFrame:
    """The 1-minute bars of ``symbol`` that the engine's ``MarketFeed`` holds for the session shown at ``now``
    and that have closed by then: ts (UTC, bar open), open, high, low, close. Bars are not stored in the
    database: only the process running the engine has them.

    Reads the feed's arrays without its lookup helpers (their memo belongs to the engine's thread); the engine
    replaces its arrays when it loads bars, never writes into them, so references taken once stay consistent."""
    ts, o, h, lo, c = feed.ts, feed.open, feed.high, feed.low, feed.close
    j = feed.col.get(symbol)
    cols = ["ts", "open", "high", "low", "close"]
    if j is None:
        return pd.DataFrame(columns=cols)
    start, close = chart_session(now)
    n = min(len(ts), len(o), len(h), len(lo), len(c))
    a = int(np.searchsorted(ts[:n], int(start.timestamp()), side="left"))
    # a bar is shown once its minute has ended (as the engine sees it), and only up to the session's close
    b = int(np.searchsorted(ts[:n], int(min(now, close).timestamp()) - 60, side="right"))
    out = pd.DataFrame({"ts": pd.to_datetime(ts[a:b], unit="s", utc=True), "open": o[a:b, j], "high": h[a:b, j],
                        "low": lo[a:b, j], "close": c[a:b, j]})
    return out.dropna(subset=["close"]).reset_index(drop=True)


def ticker_marks(store: Store, symbol: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the engine did in ``symbol`` in [start, end]: its actionable decisions (ts, bar_ts, score, price,
    action) and its fills (ts, side, qty, price), times as UTC timestamps."""
    lo, hi = start.isoformat(), end.isoformat()
    sig = pd.DataFrame(store.query(
        "SELECT ts, bar_ts, score, price, action FROM signals WHERE symbol=? AND ts >= ? AND ts <= ? "
        "AND decision='actionable' ORDER BY ts", (symbol, lo, hi)),
        columns=["ts", "bar_ts", "score", "price", "action"])
    fil = pd.DataFrame(store.query(
        "SELECT ts, side, qty, price FROM fills WHERE ts >= ? AND ts <= ? AND symbol=? ORDER BY ts",
        (lo, hi, symbol)), columns=["ts", "side", "qty", "price"])
    for df, cols in ((sig, ("ts", "bar_ts")), (fil, ("ts",))):
        for col in cols:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    return sig, fil


def decision_prices(store: Store, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The prices the decision log recorded for ``symbol`` in [start, end] (ts, price): the price line a window
    without the engine's feed can draw (the bars themselves live in the engine's process)."""
    df = pd.DataFrame(store.query("SELECT ts, price FROM signals WHERE symbol=? AND ts >= ? AND ts <= ? AND price "
                                  "IS NOT NULL ORDER BY ts", (symbol, start.isoformat(), end.isoformat())),
                      columns=["ts", "price"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
    return df
