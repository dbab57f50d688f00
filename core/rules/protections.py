"""Protections (rules §10): rollback rules that run themselves, as data.

Each rule has a look-back window, a condition over figures computed from SQLite for that window, an
action (parameter changes that only ever tighten, and/or a pause of new entries) and a cool-off: a
rule that fired does not fire again until its cool-off has passed, so firings never stack.
``Engine.run_protections`` runs after every tick that ingested a fill and after every KPI snapshot:
``evaluate_protections`` decides (pure: it returns the firings and the parameter changes they want),
the engine records each firing in its ``Protections`` (the table in memory, written through) and
applies the changes. Every firing is a ``protections`` row (rule, window figures, old -> new
parameters, until when), a notification and a parameter-audit entry with ``who='protection:<rule>'``.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from core.clock import NY, UTC, trading_date
from core.config import LiveParams, Settings
from core.metrics import kpi
from core.state.store import Store, iso

SYMBOL_COOLDOWN = "symbol_cooldown"  # suppression reason: re-entry too soon after a losing exit
DAILY_LOSS = "daily_loss"  # the risk manager's daily-loss halt (rules §7), shown as a protection

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def setting_value(value: Any, settings: Settings) -> Any:
    """A rule's number as written, or the value of the Settings field a string names."""
    return getattr(settings, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Condition:
    """``metric op threshold`` over the window's figures, judged only on a large enough sample: ``sample`` names
    the count the figure is measured over (a rate's denominator, or the count itself) and ``min_sample`` the
    least of it (like Freqtrade's ``trade_limit``). Below it the condition does not hold: one stop-out in one
    exit is a 100 % stop-out rate and says nothing yet."""

    metric: str
    op: str
    threshold: float | str  # a number, or the name of a Settings field holding it
    sample: str = ""  # a count figure of the window; "" only for a condition that needs no sample
    min_sample: int | str = 0  # a number, or the name of a Settings field holding it

    def value(self, settings: Settings) -> float:
        return float(setting_value(self.threshold, settings))

    def minimum(self, settings: Settings) -> int:
        return int(setting_value(self.min_sample, settings))

    def sampled(self, figures: dict[str, float], settings: Settings) -> bool:
        """Enough of ``sample`` in the window to judge the condition at all."""
        return not self.sample or figures.get(self.sample, 0.0) >= self.minimum(settings)

    def holds(self, figures: dict[str, float], settings: Settings) -> bool:
        return self.sampled(figures, settings) and _OPS[self.op](figures.get(self.metric, 0.0), self.value(settings))

    def text(self, figures: dict[str, float], settings: Settings) -> str:
        out = f"{self.metric} {_fmt(figures.get(self.metric, 0.0))} {self.op} {_fmt(self.value(settings))}"
        if self.sample and self.sample != self.metric:  # the sample it was judged on
            out += f" ({_fmt(figures.get(self.sample, 0.0))} {self.sample})"
        return out

    def minimum_text(self, settings: Settings) -> str:
        """The minimum sample as a page shows it: ``exits >= 5 (for stop_out_rate)``."""
        if not self.sample:
            return ""
        own = "" if self.sample == self.metric else f" (for {self.metric})"
        return f"{self.sample} >= {self.minimum(settings)}{own}"


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

    def minimums(self, settings: Settings) -> list[str]:
        """The minimum sample of each condition, as text (every rule in ``RULES`` has at least one)."""
        return [t for c in self.all_of + self.any_of if (t := c.minimum_text(settings))]


# Every condition names the sample it is judged on and that sample's minimum (Condition.min_sample): a rate over a
# handful of events, or an equity drawdown over a few snapshots, is noise. A count judged on its own (stop-outs,
# actionable signals) is its own sample.
RULES: tuple[ProtectionRule, ...] = (
    ProtectionRule(
        "signal_quality", "1 h: actionable >= 5 and (stop-out >= 40 % of >= 5 exits or flip-flop >= 25 %)",
        window_s=3600, cooloff_s=3600,
        all_of=(Condition("actionable", ">=", 5, sample="actionable", min_sample=5),),
        any_of=(Condition("stop_out_rate", ">=", 0.40, sample="exits", min_sample=5),
                Condition("flip_flop_rate", ">=", 0.25, sample="actionable", min_sample=5)),
        action={"cutoff_delta": ("toward_zero", "protection_cutoff_step"), "direction_lock_s": ("at_least", 120),
                "cooldown_s": ("at_least", 150)},
    ),
    ProtectionRule(
        "llm_or_overflow", "2 h: LLM-call surge (>= 10 calls) or Tier-A token overflow >= 15 % in a minute "
                           "(>= 30 Tier-A requests)",
        window_s=7200, cooloff_s=7200,
        # the rate per hour is extrapolated from the window so far: 2 calls in its first minute would be 120/h
        any_of=(Condition("llm_calls_per_hour", ">=", "protection_llm_surge_per_hour", sample="llm_calls",
                          min_sample=10),
                # Tier A asks about 6 tokens a minute: 30 requests are about 5 minutes of its ticks
                Condition("tier_a_overflow_max", ">=", 0.15, sample="tier_a_requested", min_sample=30)),
        action={"llm_min_signal_score": ("at_least", 0.65), "reserve_fallback": ("set_false", None)},
    ),
    ProtectionRule(
        "stoploss_guard", "N stop-outs inside the window: no new entries for a while",
        window_s="protection_stoploss_window_s", cooloff_s="protection_stoploss_pause_s",
        all_of=(Condition("stop_outs", ">=", "protection_stoploss_count", sample="stop_outs",
                          min_sample="protection_stoploss_count"),),
        pause_entries_s="protection_stoploss_pause_s",
    ),
    ProtectionRule(
        "max_drawdown", "account equity fell from its peak in the window by the limit (>= 10 equity snapshots): "
                        "no new entries for a while",
        window_s="protection_drawdown_window_s", cooloff_s="protection_drawdown_pause_s",
        # equity is sampled once a market minute: 10 snapshots are 10 minutes of it
        all_of=(Condition("equity_drawdown", ">=", "protection_max_drawdown", sample="equity_samples",
                          min_sample=10),),
        pause_entries_s="protection_drawdown_pause_s",
    ),
)


def symbol_cooldown_key(symbol: str) -> str:
    return f"protect:{symbol}"


# ---------------------------------------------------------------- figures over a window
_GROUPS = {
    "signals": ("actionable", "flip_flops", "flip_flop_rate"),
    "exits": ("exits", "stop_outs", "stop_out_rate"),
    "tokens": ("tier_a_overflow_max", "tier_a_requested"),
    "llm": ("llm_calls", "llm_calls_per_hour"),
    "equity": ("equity_drawdown", "equity_samples"),
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
        a = kpi.token_overflow(store, start, now).get("A", {})
        out.update(tier_a_overflow_max=a.get("overflow_max_minute", 0.0), tier_a_requested=float(a.get("requested", 0)))
    if "llm" in want:
        calls = kpi.llm_usage(store, start, now)["llm_calls"]
        out.update(llm_calls=float(calls),
                   llm_calls_per_hour=calls * 3600.0 / max(60.0, (now - start).total_seconds()))
    if "equity" in want:  # on account equity, not summed trade returns
        equity = [r["equity"] for r in store.query("SELECT equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts",
                                                   (since, until))]
        out.update(equity_drawdown=kpi.max_drawdown(equity), equity_samples=float(len(equity)))
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
    """What a rule's firing decided: the row to record and the parameter changes it wants applied."""

    rule: str
    at: datetime
    why: str
    figures: dict[str, float]
    changes: dict[str, Any]  # parameter -> new value, applied by the engine (``source='protection'``)
    until: datetime
    old: dict[str, Any] = field(default_factory=dict)  # parameter -> value before ``changes``
    pause_until: datetime | None = None  # no new entries until then


def active_protections(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Firings still inside their cool-off or pause and not released by hand, read from the journal (the UI's
    view; the engine asks its ``Protections``)."""
    return store.query("SELECT * FROM protections WHERE released_at IS NULL AND until > ? ORDER BY fired_at",
                       (iso(now),))


class Protections:
    """The ``protections`` table in memory, owned by the engine: whether new entries are paused, whether a rule
    is in its cool-off, when it last fired, whether the day's loss halt is recorded are answered from here, not
    from SQLite. Loaded at start (and after a rollback, which leaves it stale until the next look-up); every
    change (a firing, the daily-loss halt, a release) is written through to the table in the caller's
    transaction, so the journal the UI reads and a restart loads holds the same rows."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[int, dict[str, Any]] = {}  # every row by id (one per firing: a small table)
        self._stale = False
        store.on_rollback(self._mark_stale)  # whatever rollback it was, the memory follows the journal again
        self.load()

    def load(self) -> None:
        """(Re)build from the table: at start and after a rollback."""
        self.rows = {r["id"]: r for r in self.store.query("SELECT * FROM protections ORDER BY id")}
        self._index()
        self._stale = False

    def _mark_stale(self) -> None:
        self._stale = True

    def _fresh(self) -> None:
        if self._stale:
            self.load()

    def _index(self) -> None:
        self._pause_top: dict[str, Any] | None = None  # the unreleased row pausing entries longest
        self._cooling: dict[str, str] = {}  # rule -> latest ``until`` of its unreleased rows
        self._last: dict[str, str] = {}  # rule -> latest ``fired_at`` of all its rows
        self._halt_until: str | None = None  # latest ``until`` of the daily-loss rows
        for row in self.rows.values():
            self._note(row)

    def _note(self, row: dict[str, Any]) -> None:
        """Take one row (in id order) into the look-ups. Strings compare as SQLite compares them."""
        rule = row["rule"]
        if row["released_at"] is None:
            top = self._pause_top
            if row["pause_until"] is not None and (top is None or row["pause_until"] > top["pause_until"]):
                self._pause_top = row  # on a tie the first row stays, as ORDER BY ... DESC LIMIT 1 returns
            if row["until"] is not None and row["until"] > self._cooling.get(rule, ""):
                self._cooling[rule] = row["until"]
        if row["fired_at"] is not None and row["fired_at"] > self._last.get(rule, ""):
            self._last[rule] = row["fired_at"]
        if rule == DAILY_LOSS and row["until"] is not None and row["until"] > (self._halt_until or ""):
            self._halt_until = row["until"]

    def _add(self, row: dict[str, Any]) -> int:
        """Insert a row (written through) and take it in; returns its id."""
        cols = list(row)
        cur = self.store.execute(f"INSERT INTO protections({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                                 [row[c] for c in cols])
        pid = int(cur.lastrowid or 0)
        full = {"id": pid, **{c: None for c in _COLUMNS}, **row}
        self.rows[pid] = full
        self._note(full)
        return pid

    # ------------------------------------------------------------ look-ups
    def entries_paused_by(self, now: datetime) -> str | None:
        """The rule pausing new entries at ``now`` (stop-loss guard, drawdown), or None."""
        self._fresh()
        top = self._pause_top
        return top["rule"] if top is not None and top["pause_until"] > iso(now) else None

    def cooling_off(self, rule: str, now: datetime) -> bool:
        """``rule`` fired, is not released and its cool-off (or pause) runs past ``now``."""
        self._fresh()
        return self._cooling.get(rule, "") > (iso(now) or "")

    def last_fired(self, rule: str) -> datetime | None:
        """When ``rule`` last fired (released or not), or None."""
        self._fresh()
        last = self._last.get(rule)
        return datetime.fromisoformat(last) if last else None

    def daily_loss_recorded(self, now: datetime) -> bool:
        """The daily-loss halt of ``now``'s New York date is recorded already."""
        self._fresh()
        return self._halt_until is not None and self._halt_until > (iso(now) or "")

    def active(self, now: datetime) -> list[dict[str, Any]]:
        """Firings still inside their cool-off or pause and not released by hand, oldest first."""
        self._fresh()
        t = iso(now) or ""
        live = [r for r in self.rows.values() if r["released_at"] is None and (r["until"] or "") > t]
        return sorted(live, key=lambda r: r["fired_at"])

    # ------------------------------------------------------------ changes (written through)
    def record(self, f: Firing) -> int:
        """A firing: its row, its notification, committed. Returns the row id."""
        self._fresh()
        with self.store.lock:
            pid = self._add({
                "rule": f.rule, "fired_at": iso(f.at), "until": iso(f.until), "pause_until": iso(f.pause_until),
                "why": f.why, "figures_json": json.dumps({k: round(v, 6) for k, v in f.figures.items()}),
                "old_json": json.dumps(f.old), "new_json": json.dumps(f.changes),
            })
            text = f"protection {f.rule} fired: {f.why}"
            if f.changes:
                text += "; " + ", ".join(f"{k} {f.old[k]} -> {v}" for k, v in f.changes.items())
            if f.pause_until is not None:
                text += f"; new entries paused until {f.until.isoformat(timespec='seconds')}"
            self.store.notify("warning", text, f.at)
            self.store.commit()
        return pid

    def record_daily_loss_halt(self, now: datetime, loss: float, limit: float) -> bool:
        """The first entry the daily loss limit refuses on a New York date becomes a ``daily_loss`` protection
        row (visible, notified) that lasts until that date ends. The risk manager itself enforces the halt, so
        this is a record only: one per date, whichever path (a decision, a basket, an approval) meets the
        halt first."""
        if self.daily_loss_recorded(now):
            return False
        day_end = datetime.combine(trading_date(now) + timedelta(days=1), time(0), NY).astimezone(UTC)
        with self.store.lock:
            why = f"loss from start-of-day equity {loss:.2%} >= {limit:.2%}"
            self._add({
                "rule": DAILY_LOSS, "fired_at": iso(now), "until": iso(day_end), "pause_until": None, "why": why,
                "figures_json": json.dumps({"daily_loss": round(loss, 6), "daily_loss_limit": limit}),
                "old_json": "{}", "new_json": "{}",
            })
            self.store.notify("warning", f"protection {DAILY_LOSS} fired: {why}; new entries halted until the day "
                              "rolls", now)
        return True

    def release(self, protection_id: int, *, who: str, now: datetime) -> bool:
        """Manual release (ends the cool-off and any entry pause; parameters stay as they are, audited).
        The daily-loss halt is the risk limit itself and cannot be released by hand (ValueError)."""
        self._fresh()
        row = self.rows.get(protection_id)
        if row is not None and row["rule"] == DAILY_LOSS:
            raise ValueError("the daily loss halt is a risk limit: it lifts when the New York date rolls")
        if row is None or row["released_at"] is not None:
            return False
        store = self.store
        with store.transaction():
            store.execute("UPDATE protections SET released_at=?, released_by=? WHERE id=? AND released_at IS NULL",
                          (iso(now), who, protection_id))
            store.insert("param_audit", {"ts": iso(now), "who": who, "name": f"protection:{row['rule']}",
                                         "old": json.dumps("active"), "new": json.dumps("released"),
                                         "source": "release"})
            store.notify("info", f"protection {row['rule']} released by {who}", now)
        row.update(released_at=iso(now), released_by=who)
        self._index()
        return True


_COLUMNS = ("rule", "fired_at", "until", "pause_until", "why", "figures_json", "old_json", "new_json",
            "released_at", "released_by")


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
            seen[key] = window_figures(store, now, window, last, needed)
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
    return fired
