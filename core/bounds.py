"""The one table of the live-tunable settings' bounds (issue 23, item 2).

Every place that knows a range reads it from here: the Settings field (what ``.env`` may set), the live-parameter
check of a command (``core.config.validate_param_changes``), the sidebar sliders, the Research page's sliders and
sweep ranges, and a typed sweep grid (``core.research.replay.sweep_value`` checks the Settings field). Before this
table the cutoff delta had four ranges (±0.50 in Settings, ±0.10 for commands and both pages' sliders) and the
sidebar clamped what it showed: ``CUTOFF_DELTA=0.3`` traded at +0.30 while the slider said +0.10.

No Streamlit here (``core/`` never imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field


@dataclass(frozen=True)
class Bound:
    """One live-tunable setting: its Settings field, its live-parameter name, the closed range [lo, hi] every
    source accepts, the slider's step, the unit and how a value is written (a printf format, as Streamlit takes)."""

    setting: str  # Settings field (the environment variable is its upper case)
    param: str  # LiveParams field, the name a set_params command uses
    label: str
    lo: float
    hi: float
    step: float
    unit: str = ""
    fmt: str = "%g"
    sweep_values: tuple[float, ...] = ()  # the values a sweep offers to pick from (the Research page), all in range

    @property
    def env(self) -> str:
        return self.setting.upper()

    @property
    def is_int(self) -> bool:
        return all(float(x).is_integer() for x in (self.lo, self.hi, self.step))

    def contains(self, value: float) -> bool:
        return math.isfinite(value) and self.lo <= value <= self.hi

    def show(self, value: float) -> str:
        """``value`` as the slider writes it, with the unit."""
        text = self.fmt % value
        return f"{text} {self.unit}" if self.unit else text

    def range_text(self) -> str:
        return f"{self.show(self.lo)} … {self.show(self.hi)}"

    def widened(self, value: float) -> tuple[float, float]:
        """The slider range that shows ``value``: the table's range, stretched to include a value from outside it
        (a database written before the table), so a widget never shows another number than the engine's."""
        lo, hi = min(self.lo, value), max(self.hi, value)
        return (int(lo), int(hi)) if self.is_int else (float(lo), float(hi))

    def field(self, default: Any) -> Any:
        """The pydantic Field of the Settings attribute: its bounds are this range."""
        return Field(default, ge=self.lo, le=self.hi)


BOUNDS: tuple[Bound, ...] = (
    # ±0.50: what a person may set in .env (the cutoffs themselves are 0.28–0.35, so +0.50 already means "almost
    # nothing passes" and −0.50 hits the 0.01 floor); the slider covers the same range in steps of 0.01
    Bound("cutoff_delta", "cutoff_delta", "Cutoff delta", -0.50, 0.50, 0.01, fmt="%+.2f"),
    # 0–30 min: a cooldown longer than a tier's whole half-hour segment is no longer a cooldown; 0 switches it off
    Bound("mixer_cooldown_s", "cooldown_s", "Cooldown", 0, 1800, 10, unit="s", fmt="%d",
          sweep_values=(30, 60, 120, 180, 300, 600, 900, 1800)),
    Bound("direction_lock_s", "direction_lock_s", "Direction lock", 0, 1800, 10, unit="s", fmt="%d"),
    Bound("llm_min_signal_score", "llm_min_signal_score", "LLM minimum score", 0.0, 1.0, 0.01, fmt="%.2f"),
)

BY_SETTING: dict[str, Bound] = {b.setting: b for b in BOUNDS}
BY_PARAM: dict[str, Bound] = {b.param: b for b in BOUNDS}
assert all(b.contains(v) for b in BOUNDS for v in b.sweep_values), "a sweep value outside its setting's range"
