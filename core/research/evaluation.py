"""The paper-evaluation report: is this configuration ready for the default profile, or for live money?

The old bot's plan (seed log, 2025-08-18): two sessions on the relaxed profile, then three on the default
profile, cutting over early when the KPIs pass. Each New York session the engine ran in is judged on its
own KPIs (``core.metrics.kpi``) against configurable acceptance thresholds (``EVAL_*`` settings); the verdict is one
plain sentence: "ready for the default profile", "ready for live" or "not yet, because ...".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from core.clock import UTC, session_bounds, sessions_between, trading_date
from core.config import Settings
from core.metrics import kpi
from core.state.decisions import any_decision, first_decision_ts
from core.state.protections import DAILY_LOSS
from core.state.store import Store, iso

READY_DEFAULT = "ready for the default profile"
READY_LIVE = "ready for live"


@dataclass(frozen=True)
class SessionResult:
    day: date
    profile: str
    status: str  # passed | failed | in progress
    figures: dict[str, Any]
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def label(self) -> str:
        return f"{self.day} ({self.profile})"


@dataclass(frozen=True)
class EvaluationReport:
    verdict: str
    detail: str
    sessions: tuple[SessionResult, ...] = field(default_factory=tuple)

    def rows(self) -> list[dict[str, Any]]:
        """One table row per session, the figures a trader checks first."""
        out = []
        for s in self.sessions:
            f = s.figures
            out.append({"session": s.day.isoformat(), "profile": s.profile, "status": s.status,
                        "actionable": f.get("actionable", 0), "stop_out_rate": f.get("stop_out_rate", 0.0),
                        "flip_flop_rate": f.get("flip_flop_rate", 0.0),
                        "tier_a_overflow_max": f.get("tier_a_overflow_max", 0.0),
                        "max_drawdown": f.get("max_drawdown", 0.0), "trades": f.get("trades", 0),
                        "pnl_realized": f.get("pnl_realized", 0.0), "why_not": "; ".join(s.failures)})
        return out


def profile_timeline(store: Store) -> list[tuple[str, str]]:
    """(from ISO time, profile) in time order, from the parameter audit; the first entry starts at ''."""
    changes = store.query("SELECT ts, old, new FROM param_audit WHERE name='profile' ORDER BY id")
    if not changes:
        row = store.one("SELECT json FROM params WHERE id=1")
        return [("", json.loads(row["json"]).get("profile", "default") if row else "default")]
    return [("", json.loads(changes[0]["old"]))] + [(c["ts"], json.loads(c["new"])) for c in changes]


def session_profile(timeline: list[tuple[str, str]], open_: datetime, close: datetime) -> str:
    """The profile that was on for most of the session's regular hours."""
    spent: dict[str, float] = {}
    for k, (since, name) in enumerate(timeline):
        start = max(open_, datetime.fromisoformat(since)) if since else open_
        end = min(close, datetime.fromisoformat(timeline[k + 1][0])) if k + 1 < len(timeline) else close
        if end > start:
            spent[name] = spent.get(name, 0.0) + (end - start).total_seconds()
    return max(spent, key=lambda n: spent[n]) if spent else timeline[-1][1]


def session_failures(figures: dict[str, Any], settings: Settings, halted: bool) -> list[str]:
    """Why one session does not pass the acceptance thresholds (empty: it passes)."""
    s, f = settings, figures
    out = []
    if f["actionable"] < s.eval_min_actionable:
        out.append(f"only {f['actionable']} actionable signals (< {s.eval_min_actionable})")
    if f["stop_out_rate"] >= s.eval_max_stop_out_rate and f["trades"]:
        out.append(f"stop-out rate {f['stop_out_rate']:.0%} (>= {s.eval_max_stop_out_rate:.0%})")
    if f["flip_flop_rate"] >= s.eval_max_flip_flop_rate and f["actionable"]:
        out.append(f"flip-flop rate {f['flip_flop_rate']:.0%} (>= {s.eval_max_flip_flop_rate:.0%})")
    if f["tier_a_overflow_max"] >= s.eval_max_tier_a_overflow:
        out.append(f"Tier-A token overflow {f['tier_a_overflow_max']:.0%} in a minute "
                   f"(>= {s.eval_max_tier_a_overflow:.0%})")
    if f["max_drawdown"] >= s.eval_max_drawdown:
        out.append(f"equity drawdown {f['max_drawdown']:.2%} (>= {s.eval_max_drawdown:.2%})")
    if s.eval_min_profit_factor > 0 and f["trades"] and f["profit_factor"] < s.eval_min_profit_factor:
        out.append(f"profit factor {f['profit_factor']:.2f} (< {s.eval_min_profit_factor:.2f})")
    if halted:
        out.append("the daily loss limit halted new entries")
    return out


def evaluate_sessions(store: Store, settings: Settings, now: datetime) -> list[SessionResult]:
    """Every session, up to ``now``, in which the engine recorded decisions, judged on its own KPIs."""
    first = first_decision_ts(store)  # either form of the decision log (core.state.decisions)
    if first is None:
        return []
    timeline = profile_timeline(store)
    out = []
    for day in sessions_between(trading_date(datetime.fromisoformat(first)), trading_date(now)):
        bounds = session_bounds(day)
        if bounds is None:
            continue
        open_, close = (b.astimezone(UTC) for b in bounds)
        if open_ > now or not any_decision(store, iso(open_), iso(close), "[)"):
            continue  # the engine did not run that session: not judged
        figures = kpi.kpi_report(store, settings, open_, min(close, now))["all"]
        profile = session_profile(timeline, open_, close)
        if now < close:
            out.append(SessionResult(day, profile, "in progress", figures))
            continue
        halted = store.scalar("SELECT 1 FROM protections WHERE rule=? AND fired_at >= ? AND fired_at < ? LIMIT 1",
                              (DAILY_LOSS, iso(open_), iso(close))) is not None
        fails = tuple(session_failures(figures, settings, halted))
        out.append(SessionResult(day, profile, "failed" if fails else "passed", figures, fails))
    return out


def _trailing_passes(sessions: list[SessionResult]) -> int:
    n = 0
    for s in reversed(sessions):
        if not s.passed:
            break
        n += 1
    return n


def _failed_text(sessions: list[SessionResult]) -> str:
    return "; ".join(f"{s.label()} failed: {', '.join(s.failures)}" for s in sessions if not s.passed)


def paper_evaluation(store: Store, settings: Settings, now: datetime) -> EvaluationReport:
    """The verdict over the sessions so far (see the module docstring for the plan)."""
    sessions = evaluate_sessions(store, settings, now)
    done = [s for s in sessions if s.status != "in progress"]
    relaxed = [s for s in done if s.profile == "relaxed"]
    default = [s for s in done if s.profile == "default"]
    need_r, need_d = settings.eval_relaxed_sessions, settings.eval_default_sessions
    relaxed_ok = need_r == 0 or _trailing_passes(relaxed) >= need_r
    streak = _trailing_passes(default)
    report = tuple(sessions)
    if relaxed_ok and streak >= need_d:
        return EvaluationReport(READY_LIVE, f"{streak} default-profile sessions in a row passed", report)
    if relaxed_ok and default and all(s.passed for s in done) and len(done) >= settings.eval_early_cutover_sessions:
        return EvaluationReport(READY_LIVE, f"early cut-over: all {len(done)} sessions passed "
                                            f"({len(default)} on the default profile)", report)
    if relaxed_ok:
        detail = (f"live needs {need_d} passing default-profile sessions in a row "
                  f"(or {settings.eval_early_cutover_sessions} sessions with none failed): {streak} so far")
        if streak < len(default):  # the session that broke the streak
            detail += f"; {_failed_text([default[-streak - 1]])}"
        return EvaluationReport(READY_DEFAULT, detail, report)
    if not done:
        why = "no paper session has been completed yet" + (
            f" ({sessions[-1].label()} is in progress)" if sessions else "")
    else:
        why = f"{_trailing_passes(relaxed)} of {need_r} relaxed-profile sessions passed in a row"
        if failed := _failed_text(relaxed[-need_r:]):
            why += f"; {failed}"
        if not relaxed:
            why += " (the plan starts on the relaxed profile; EVAL_RELAXED_SESSIONS=0 skips that phase)"
    return EvaluationReport(f"not yet, because {why}", "", report)
