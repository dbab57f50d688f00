"""Protections (rules §10): rollback rules that run themselves, as data, judged by plain functions.

Each rule has a look-back window, conditions over the window's figures (counts and rates: ``core.engine.protect``
computes them from the journal), an action (parameter changes that only ever tighten, and/or a pause of new
entries) and a cool-off: a rule that fired does not fire again until its cool-off has passed, so firings never
stack. A condition holds only on a large enough sample (``condition_holds``); an action moves a parameter only the
tighter way (``tighten``). A threshold, sample minimum or action value written as a string names the Settings field
that holds it (``setting_value``), so the table stays data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import LiveParams, Settings

OP_GE, OP_GT, OP_LE, OP_LT = 0, 1, 2, 3
OPS = {">=": OP_GE, ">": OP_GT, "<=": OP_LE, "<": OP_LT}
TOWARD_ZERO, AT_LEAST, AT_MOST, SET_FALSE = 0, 1, 2, 3
ACTIONS = {"toward_zero": TOWARD_ZERO, "at_least": AT_LEAST, "at_most": AT_MOST, "set_false": SET_FALSE}


def compare(value: float, op: int, threshold: float) -> bool:
    if op == OP_GE:
        return value >= threshold
    if op == OP_GT:
        return value > threshold
    if op == OP_LE:
        return value <= threshold
    return value < threshold


def condition_holds(value: float, op: int, threshold: float, sample: float, min_sample: float) -> bool:
    """``value op threshold``, judged only when the sample it is measured over reaches ``min_sample``: one stop-out
    in one exit is a 100 % stop-out rate and says nothing yet (like Freqtrade's ``trade_limit``)."""
    return sample >= min_sample and compare(value, op, threshold)


def tighten(how: int, old: float, value: float) -> float:
    """A parameter after an action: ``toward_zero`` moves a negative value by ``value`` toward 0 and never past it,
    ``at_least`` raises to ``value``, ``at_most`` lowers to it, ``set_false`` switches a flag off."""
    if how == TOWARD_ZERO:
        return min(0.0, round(old + value, 6)) if old < 0 else old
    if how == AT_LEAST:
        return max(old, value)
    if how == AT_MOST:
        return min(old, value)
    return 0.0


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
        sample = figures.get(self.sample, 0.0) if self.sample else float("inf")
        return condition_holds(figures.get(self.metric, 0.0), OPS[self.op], self.value(settings), sample,
                               self.minimum(settings))

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




def _fmt(v: float) -> str:
    return f"{v:.2f}" if v != int(v) else str(int(v))


def tightened(params: LiveParams, rule: ProtectionRule, settings: Settings) -> dict[str, Any]:
    """The parameter changes a rule makes; a change that would loosen a limit is left out."""
    out: dict[str, Any] = {}
    cur = params.as_dict()
    for name, (how, raw) in rule.action.items():
        if how not in ACTIONS:
            raise ValueError(f"rule {rule.name}: unknown action {how!r}")
        old = cur[name]
        value = 0.0 if raw is None else float(setting_value(raw, settings))
        new = type(old)(tighten(ACTIONS[how], old, value))
        if new != old:
            out[name] = new
    return out
