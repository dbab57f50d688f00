"""Protections (SPEC 10): rollback rules that run themselves, as data.

Each rule has a look-back window, a condition over figures computed from SQLite for that window, an
action (parameter changes that only ever tighten, and/or a pause of new entries) and a cool-off: a
rule that fired does not fire again until its cool-off has passed, so firings never stack.
``evaluate_protections`` runs after every tick that ingested a fill and after every KPI snapshot.
Every firing is a ``protections`` row (rule, window figures, old -> new parameters, until when),
a notification and a parameter-audit entry with ``who='protection:<rule>'``.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from core import kpi
from core.clock import NY, UTC, trading_date
from core.config import LiveParams, Settings
from core.store import Store, iso

SYMBOL_COOLDOWN = "symbol_cooldown"  # suppression reason: re-entry too soon after a losing exit
DAILY_LOSS = "daily_loss"  # the risk manager's daily-loss halt (SPEC 7), shown as a protection

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def setting_value(value: Any, settings: Settings) -> Any:
    """A rule's number as written, or the value of the Settings field a string names."""
    return getattr(settings, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    threshold: float | str  # a number, or the name of a Settings field holding it

    def value(self, settings: Settings) -> float:
        return float(setting_value(self.threshold, settings))

    def holds(self, figures: dict[str, float], settings: Settings) -> bool:
        return _OPS[self.op](figures.get(self.metric, 0.0), self.value(settings))

    def text(self, figures: dict[str, float], settings: Settings) -> str:
        return f"{self.metric} {_fmt(figures.get(self.metric, 0.0))} {self.op} {_fmt(self.value(settings))}"


@dataclass(frozen=True)
class ProtectionRule:
    """Fires when every ``all_of`` condition holds and, if given, at least one ``any_of`` condition holds.

    ``action``: parameter -> (how, value): ``toward_zero`` moves by ``value`` toward 0 and never past it,
    ``at_least`` raises to ``value``, ``at_most`` lowers to it, ``set_false`` switches a flag off.
    A value given as a string names the Settings field that holds it. ``pause_entries_s``: no new entries
    (long or basket) for that long.
    """

    name: str
    description: str
    window_s: int | str
    cooloff_s: int | str
    all_of: tuple[Condition, ...] = ()
    any_of: tuple[Condition, ...] = ()
    action: dict[str, tuple[str, float | str | None]] = field(default_factory=dict)
    pause_entries_s: int | str = 0

    def fires(self, figures: dict[str, float], settings: Settings) -> bool:
        if not all(c.holds(figures, settings) for c in self.all_of):
            return False
        return not self.any_of or any(c.holds(figures, settings) for c in self.any_of)

    def why(self, figures: dict[str, float], settings: Settings) -> str:
        parts = [c.text(figures, settings) for c in self.all_of]
        hit = [c.text(figures, settings) for c in self.any_of if c.holds(figures, settings)]
        return " and ".join(parts + ([" or ".join(hit)] if hit else []))


RULES: tuple[ProtectionRule, ...] = (
    ProtectionRule(
        "signal_quality", "1 h: actionable >= 5 and (stop-out >= 40 % or flip-flop >= 25 %)",
        window_s=3600, cooloff_s=3600,
        all_of=(Condition("actionable", ">=", 5),),
        any_of=(Condition("stop_out_rate", ">=", 0.40), Condition("flip_flop_rate", ">=", 0.25)),
        action={"cutoff_delta": ("toward_zero", "protection_cutoff_step"), "direction_lock_s": ("at_least", 120),
                "cooldown_s": ("at_least", 150)},
    ),
    ProtectionRule(
        "llm_or_overflow", "2 h: LLM-call surge or Tier-A token overflow >= 15 % in a minute",
        window_s=7200, cooloff_s=7200,
        any_of=(Condition("llm_calls_per_hour", ">=", "protection_llm_surge_per_hour"),
                Condition("tier_a_overflow_max", ">=", 0.15)),
        action={"llm_min_signal_score": ("at_least", 0.65), "reserve_fallback": ("set_false", None)},
    ),
    ProtectionRule(
        "stoploss_guard", "N stop-outs inside the window: no new entries for a while",
        window_s="protection_stoploss_window_s", cooloff_s="protection_stoploss_pause_s",
        all_of=(Condition("stop_outs", ">=", "protection_stoploss_count"),),
        pause_entries_s="protection_stoploss_pause_s",
    ),
    ProtectionRule(
        "max_drawdown", "account equity fell from its peak in the window by the limit: no new entries for a while",
        window_s="protection_drawdown_window_s", cooloff_s="protection_drawdown_pause_s",
        all_of=(Condition("equity_drawdown", ">=", "protection_max_drawdown"),),
        pause_entries_s="protection_drawdown_pause_s",
    ),
)


def symbol_cooldown_key(symbol: str) -> str:
    return f"protect:{symbol}"


# ---------------------------------------------------------------- figures over a window
_GROUPS = {
    "signals": ("actionable", "flip_flops", "flip_flop_rate"),
    "exits": ("exits", "stop_outs", "stop_out_rate"),
    "tokens": ("tier_a_overflow_max",),
    "llm": ("llm_calls", "llm_calls_per_hour"),
    "equity": ("equity_drawdown",),
}


def window_figures(store: Store, now: datetime, window_s: int, after: datetime | None = None,
                   needed: frozenset[str] | None = None) -> dict[str, float]:
    """The rules' figures over (now - window_s, now], or from ``after`` when that is later. ``needed``: the
    metrics a rule reads; only their groups are queried (this runs after every fill)."""
    start = now - timedelta(seconds=window_s)
    if after is not None and after > start:
        start = after
    since, until = iso(start), iso(now)
    want = {g for g, names in _GROUPS.items() if needed is None or needed & set(names)}
    out: dict[str, float] = {}
    if "signals" in want:
        acts = store.query("SELECT symbol, ts, score FROM signals WHERE decision='actionable' AND ts > ? AND ts <= ? "
                           "ORDER BY ts, id", (since, until))
        flips = kpi.flip_flops([(r["symbol"], datetime.fromisoformat(r["ts"]).timestamp(), r["score"] or 0.0)
                            for r in acts])
        out.update(actionable=float(len(acts)), flip_flops=float(flips),
                   flip_flop_rate=flips / len(acts) if acts else 0.0)
    if "exits" in want:
        exits = store.query("SELECT exit_reason FROM trades WHERE exit_ts > ? AND exit_ts <= ?", (since, until))
        stop_outs = sum(1 for r in exits if r["exit_reason"] == "stop_loss")
        out.update(exits=float(len(exits)), stop_outs=float(stop_outs),
                   stop_out_rate=stop_outs / len(exits) if exits else 0.0)
    if "tokens" in want:
        out["tier_a_overflow_max"] = kpi.token_overflow(store, start, now).get("A", {}).get("overflow_max_minute", 0.0)
    if "llm" in want:
        calls = kpi.llm_usage(store, start, now)["llm_calls"]
        out.update(llm_calls=float(calls),
                   llm_calls_per_hour=calls * 3600.0 / max(60.0, (now - start).total_seconds()))
    if "equity" in want:  # on account equity, not summed trade returns
        out["equity_drawdown"] = kpi.max_drawdown([r["equity"] for r in store.query(
            "SELECT equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts", (since, until))])
    return out


def _fmt(v: float) -> str:
    return f"{v:.2f}" if v != int(v) else str(int(v))


# ---------------------------------------------------------------- actions
def tightened(params: LiveParams, rule: ProtectionRule, settings: Settings) -> dict[str, Any]:
    """The parameter changes a rule makes; a change that would loosen a limit is left out."""
    out: dict[str, Any] = {}
    cur = params.as_dict()
    for name, (how, raw) in rule.action.items():
        value = setting_value(raw, settings)
        old = cur[name]
        if how == "toward_zero":
            new = min(0.0, round(old + value, 6)) if old < 0 else old
        elif how == "at_least":
            new = max(old, type(old)(value))
        elif how == "at_most":
            new = min(old, type(old)(value))
        elif how == "set_false":
            new = False
        else:
            raise ValueError(f"rule {rule.name}: unknown action {how!r}")
        if new != old:
            out[name] = new
    return out


@dataclass(frozen=True)
class Firing:
    rule: str
    at: datetime
    why: str
    figures: dict[str, float]
    changes: dict[str, Any]
    until: datetime


def active_protections(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Firings still inside their cool-off or pause and not released by hand."""
    return store.query("SELECT * FROM protections WHERE released_at IS NULL AND until > ? ORDER BY fired_at",
                       (iso(now),))


def entries_paused_by(store: Store, now: datetime) -> str | None:
    """The rule pausing new entries at ``now`` (stop-loss guard, drawdown), or None."""
    row = store.one("SELECT rule FROM protections WHERE released_at IS NULL AND pause_until > ? "
                    "ORDER BY pause_until DESC LIMIT 1", (iso(now),))
    return None if row is None else row["rule"]


def evaluate_protections(engine: Any, now: datetime, rules: tuple[ProtectionRule, ...] = RULES) -> list[Firing]:
    """Check every rule at ``now``; apply, store and notify each that fires. Returns the firings."""
    store, s = engine.store, engine.s
    fired: list[Firing] = []
    # rules reading the same metrics over the same window share one computation
    seen: dict[tuple[int, str | None, frozenset[str]], dict[str, float]] = {}
    for rule in rules:
        if store.scalar("SELECT 1 FROM protections WHERE rule=? AND released_at IS NULL AND until > ? LIMIT 1",
                        (rule.name, iso(now))) is not None:
            continue  # inside its cool-off: a second firing does not stack
        window = int(setting_value(rule.window_s, s))
        # only what happened since the rule last fired counts again: the same stop-outs do not re-fire it
        last = store.scalar("SELECT MAX(fired_at) FROM protections WHERE rule=?", (rule.name,))
        needed = frozenset(c.metric for c in rule.all_of + rule.any_of)
        key = (window, last, needed)
        if key not in seen:
            seen[key] = window_figures(store, now, window, datetime.fromisoformat(last) if last else None, needed)
        figures = seen[key]
        if not rule.fires(figures, s):
            continue
        changes = tightened(engine.params, rule, s)
        pause_s = int(setting_value(rule.pause_entries_s, s))
        if not changes and not pause_s:
            continue  # already at least as tight: nothing to do, nothing to report
        old = {k: engine.params.as_dict()[k] for k in changes}
        until = now + timedelta(seconds=max(int(setting_value(rule.cooloff_s, s)), pause_s))
        why = rule.why(figures, s)
        with store.lock:
            store.insert("protections", {
                "rule": rule.name, "fired_at": iso(now), "until": iso(until),
                "pause_until": iso(now + timedelta(seconds=pause_s)) if pause_s else None,
                "why": why, "figures_json": json.dumps({k: round(v, 6) for k, v in figures.items()}),
                "old_json": json.dumps(old), "new_json": json.dumps(changes),
            })
            text = f"protection {rule.name} fired: {why}"
            if changes:
                text += "; " + ", ".join(f"{k} {old[k]} -> {v}" for k, v in changes.items())
            if pause_s:
                text += f"; new entries paused until {until.isoformat(timespec='seconds')}"
            store.notify("warning", text, now)
            store.commit()
        if changes:
            engine.set_params(changes, who=f"protection:{rule.name}", now=now, source="protection")
        fired.append(Firing(rule.name, now, why, figures, changes, until))
    return fired


def record_daily_loss_halt(store: Store, now: datetime, loss: float, limit: float) -> bool:
    """The first entry the daily loss limit refuses on a New York date becomes a ``daily_loss`` protection row
    (visible, notified) that lasts until that date ends. The risk manager itself enforces the halt, so this is
    a record only: one per date, whichever path (engine, replay fast path, approval) meets the halt first."""
    day_end = datetime.combine(trading_date(now) + timedelta(days=1), time(0), NY).astimezone(UTC)
    with store.lock:
        if store.scalar("SELECT 1 FROM protections WHERE rule=? AND until > ? LIMIT 1", (DAILY_LOSS, iso(now))):
            return False
        why = f"loss from start-of-day equity {loss:.2%} >= {limit:.2%}"
        store.insert("protections", {
            "rule": DAILY_LOSS, "fired_at": iso(now), "until": iso(day_end), "pause_until": None, "why": why,
            "figures_json": json.dumps({"daily_loss": round(loss, 6), "daily_loss_limit": limit}),
            "old_json": "{}", "new_json": "{}",
        })
        store.notify("warning", f"protection {DAILY_LOSS} fired: {why}; new entries halted until the day rolls", now)
    return True


def release_protection(store: Store, protection_id: int, *, who: str, now: datetime) -> bool:
    """Manual release (ends the cool-off and any entry pause; parameters stay as they are, audited).
    The daily-loss halt is the risk limit itself and cannot be released by hand (ValueError)."""
    if store.scalar("SELECT rule FROM protections WHERE id=?", (protection_id,)) == DAILY_LOSS:
        raise ValueError("the daily loss halt is a risk limit: it lifts when the New York date rolls")
    with store.transaction():
        cur = store.execute("UPDATE protections SET released_at=?, released_by=? WHERE id=? AND released_at IS NULL",
                            (iso(now), who, protection_id))
        if cur.rowcount:
            rule = store.scalar("SELECT rule FROM protections WHERE id=?", (protection_id,))
            store.insert("param_audit", {"ts": iso(now), "who": who, "name": f"protection:{rule}",
                                         "old": json.dumps("active"), "new": json.dumps("released"),
                                         "source": "release"})
            store.notify("info", f"protection {rule} released by {who}", now)
    return bool(cur.rowcount)
