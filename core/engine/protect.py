"""The protections' figures and their evaluation (rules §10): the one place that reads the journal for them.

``window_figures`` counts what a rule's window holds (actionable signals and flip-flops, exits and stop-outs, Tier-A
token overflow, LLM calls, equity drawdown); ``evaluate_protections`` asks each rule of ``core.rules.protections``
whether those figures fire it, and returns the firings with the parameter changes they want. Nothing is written
here: ``LiveParameters.run_protections`` records the firings and applies the changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core.config import LiveParams, Settings
from core.metrics import kpi
from core.rules.protections import RULES, ProtectionRule, setting_value, tightened
from core.state.protections import TOKEN_TIER, Firing, Protections, ProtectionWindows
from core.state.store import Store, iso

_GROUPS = {
    "signals": ("actionable", "flip_flops", "flip_flop_rate"),
    "exits": ("exits", "stop_outs", "stop_out_rate"),
    "tokens": ("tier_a_overflow_max", "tier_a_requested"),
    "llm": ("llm_calls", "llm_calls_per_hour"),
    "equity": ("equity_drawdown", "equity_samples"),
}


def window_figures(store: Store, now: datetime, window_s: int, after: datetime | None = None,
                   needed: frozenset[str] | None = None, windows: ProtectionWindows | None = None) -> dict[str, float]:
    """The rules' figures over (now - window_s, now], or from ``after`` when that is later. ``needed``: the
    metrics a rule reads; only their groups are counted (this runs after every fill). ``windows``: the engine's
    journal rows kept in memory (``Protections.windows``), the same rows the queries read; None reads SQLite."""
    start = now - timedelta(seconds=window_s)
    if after is not None and after > start:
        start = after
    since, until = iso(start) or "", iso(now) or ""
    want = {g for g, names in _GROUPS.items() if needed is None or needed & set(names)}
    out: dict[str, float] = {}
    if "signals" in want:
        if windows is not None:
            acts: list[Any] = windows.rows(windows.actionable, since, until)
            flips = kpi.flip_flops(acts)
        else:
            acts = store.query("SELECT symbol, ts, score FROM signals WHERE decision='actionable' AND ts > ? "
                               "AND ts <= ? ORDER BY ts, id", (since, until))
            flips = kpi.flip_flops([(r["symbol"], datetime.fromisoformat(r["ts"]).timestamp(), r["score"] or 0.0)
                                    for r in acts])
        out.update(actionable=float(len(acts)), flip_flops=float(flips),
                   flip_flop_rate=flips / len(acts) if acts else 0.0)
    if "exits" in want:
        if windows is not None:
            reasons = windows.rows(windows.exits, since, until)
        else:
            reasons = [r[0] for r in store.conn.execute(
                "SELECT exit_reason FROM trades WHERE exit_ts > ? AND exit_ts <= ?", (since, until))]
        stop_outs = sum(1 for r in reasons if r == "stop_loss")
        out.update(exits=float(len(reasons)), stop_outs=float(stop_outs),
                   stop_out_rate=stop_outs / len(reasons) if reasons else 0.0)
    if "tokens" in want:
        if windows is not None:
            counts = windows.rows(windows.tokens, iso(kpi.minute_ny(start)) or "", iso(kpi.minute_ny(now)) or "")
            a = kpi.overflow_of(counts) if counts else {}
        else:
            a = kpi.token_overflow(store, start, now).get(TOKEN_TIER, {})
        out.update(tier_a_overflow_max=a.get("overflow_max_minute", 0.0), tier_a_requested=float(a.get("requested", 0)))
    if "llm" in want:
        calls = kpi.llm_usage(store, start, now)["llm_calls"]
        out.update(llm_calls=float(calls),
                   llm_calls_per_hour=calls * 3600.0 / max(60.0, (now - start).total_seconds()))
    if "equity" in want:  # on account equity, not summed trade returns
        if windows is not None:
            equity = windows.rows(windows.equity, since, until)
        else:  # plain tuples: over up to a day of minutes
            equity = [r[0] for r in store.conn.execute(
                "SELECT equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts", (since, until)).fetchall()]
        out.update(equity_drawdown=kpi.max_drawdown(equity), equity_samples=float(len(equity)))
    return out


def evaluate_protections(state: Protections, store: Store, settings: Settings, params: LiveParams, now: datetime,
                         rules: tuple[ProtectionRule, ...] = RULES) -> list[Firing]:
    """Check every rule at ``now`` against the live parameters ``params``: the firings, each with the parameter
    changes it wants, in rule order (a later rule tightens what an earlier one left). Pure: nothing is written
    or applied here (``Engine.run_protections`` records and applies them); ``store`` is read for the window
    figures only, ``state`` for the cool-offs and last firings."""
    s = settings
    fired: list[Firing] = []
    # rules reading the same metrics over the same window share one computation
    seen: dict[tuple[int, datetime | None, frozenset[str]], dict[str, float]] = {}
    for rule in rules:
        if state.cooling_off(rule.name, now):
            continue  # inside its cool-off: a second firing does not stack
        window = int(setting_value(rule.window_s, s))
        # only what happened since the rule last fired counts again: the same stop-outs do not re-fire it
        last = state.last_fired(rule.name)
        needed = frozenset(name for c in rule.all_of + rule.any_of for name in (c.metric, c.sample) if name)
        key = (window, last, needed)
        if key not in seen:
            seen[key] = window_figures(store, now, window, last, needed, state.windows)
        figures = seen[key]
        if not rule.fires(figures, s):
            continue
        changes = tightened(params, rule, s)
        pause_s = int(setting_value(rule.pause_entries_s, s))
        if not changes and not pause_s:
            continue  # already at least as tight: nothing to do, nothing to report
        old = {k: params.as_dict()[k] for k in changes}
        until = now + timedelta(seconds=max(int(setting_value(rule.cooloff_s, s)), pause_s))
        fired.append(Firing(rule.name, now, rule.why(figures, s), figures, changes, until, old,
                            now + timedelta(seconds=pause_s) if pause_s else None))
        if changes:
            params = params.with_changes(**changes)  # as the engine will have them when the next rule is checked
    if rules:  # rows older than every rule's window are not asked for again (an older window reads them back)
        oldest = now - timedelta(seconds=max(int(setting_value(r.window_s, s)) for r in rules))
        state.windows.forget(iso(oldest) or "", iso(kpi.minute_ny(oldest)) or "")
    return fired
