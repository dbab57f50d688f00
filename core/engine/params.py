"""The live parameters: loaded from SQLite at start, changed only through ``set_params`` (persisted and audited
old -> new per name), by a trader's command, a protection that fires, or a relaxed profile that runs out.

Separate from the tick because three callers change them (commands, protections, the day roll) and every change
must leave the same audit trail. Each change also rebuilds the rules' parameter vector (``core.rules.params``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.clock import sessions_touched, trading_date
from core.config import ConfigError, LiveParams, Settings, apply_profile, validate_param_changes
from core.engine.protect import evaluate_protections
from core.rules.params import param_vector
from core.rules.protections import RULES, ProtectionRule
from core.state.protections import Firing, Protections
from core.state.store import Store, iso

log = logging.getLogger(__name__)

SLIDER = "slider"  # a slider's steps are folded into one audit row (COMMAND_SOURCES: core.engine.commands)
# A slider sends a value per arrow-key step (16 for one move): the steps of one person on one setting that follow
# each other within this many wall-clock seconds are one change, one audit row (first old value, last new one).
SLIDER_COALESCE_S = 5.0


class LiveParameters:
    """The engine's live parameters (``params``) and the rules' vector built from them (``p``): load, change with an
    audit row, expire the relaxed profile, apply protections."""

    def __init__(self, settings: Settings, store: Store, protections: Protections, lock: threading.RLock,
                 wall_clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.store = store
        self.protections = protections
        self.lock = lock
        # the wall clock (monotonic seconds) that groups a slider's steps: not the market clock, which runs
        # SIM_SPEED times faster and jumps over nights; tests set their own
        self.wall_clock = wall_clock
        self._slider_step_at: dict[int, float] = {}  # audit row id -> wall time of its last slider step
        self.params = self._load_params()

    @property
    def params(self) -> LiveParams:
        return self._params

    @params.setter
    def params(self, value: LiveParams) -> None:
        self._params = value
        self.p: list[float] = param_vector(self.s, value).tolist()  # what the rules read

    def _load_params(self) -> LiveParams:
        row = self.store.one("SELECT json FROM params WHERE id=1")
        base = LiveParams.from_settings(self.s)
        if row is None:
            self.store.upsert("params", {"id": 1, "json": json.dumps(base.as_dict()), "updated_at": None})
            self.store.commit()
            return base
        try:
            saved = json.loads(row["json"])
        except (TypeError, ValueError) as e:
            saved = None
            log.error("stored live parameters unreadable (%s); using settings", e)
        if not isinstance(saved, dict):
            saved = {}
        kept: dict[str, Any] = {}
        dropped = []
        for name, value in saved.items():  # each on its own: one bad value does not drop the pause or the mode
            if name not in base.as_dict():
                continue
            try:
                kept.update(validate_param_changes({name: value}))
            except (ConfigError, TypeError, ValueError) as e:
                dropped.append(name)
                log.error("stored live parameter refused (%s); using the setting's value", e)
        params = LiveParams(**{**base.as_dict(), **kept})
        if dropped or set(saved) != set(base.as_dict()):  # what the pages read is what the engine uses
            self.store.upsert("params", {"id": 1, "json": json.dumps(params.as_dict()), "updated_at": None})
            self.store.commit()
        return params

    def set_params(self, changes: dict[str, Any], *, who: str, now: datetime, source: str = "command") -> LiveParams:
        """Apply, persist and audit a parameter change (old -> new per name)."""
        with self.lock:
            if "profile" in changes:
                new = apply_profile(self.params, changes["profile"],
                                    self.s.relaxed_sessions if changes["profile"] == "relaxed" else None)
                if changes["profile"] == "default":  # back to the configured defaults
                    d = LiveParams.from_settings(self.s)
                    new = new.with_changes(cutoff_delta=d.cutoff_delta, cooldown_s=d.cooldown_s,
                                           llm_min_signal_score=d.llm_min_signal_score,
                                           reserve_fallback=d.reserve_fallback,
                                           direction_lock_s=d.direction_lock_s)
                rest = {k: v for k, v in changes.items() if k != "profile"}
                new = new.with_changes(**rest) if rest else new
            else:
                new = self.params.with_changes(**changes)
            old = self.params.as_dict()
            for name, value in new.as_dict().items():
                if old[name] != value and not (source == SLIDER and self._coalesce_step(name, value, who, now)):
                    cur = self.store.execute(
                        "INSERT INTO param_audit(ts, who, name, old, new, source) VALUES (?,?,?,?,?,?)",
                        (iso(now), who, name, json.dumps(old[name]), json.dumps(value), source))
                    if source == SLIDER:
                        self._slider_steps()[int(cur.lastrowid or 0)] = self.wall_clock()
            self.params = new
            self.store.upsert("params", {"id": 1, "json": json.dumps(new.as_dict()), "updated_at": iso(now)})
            self.store.commit()
            return new

    def _slider_steps(self) -> dict[int, float]:
        """Audit row id -> wall time of the last slider step it holds (in memory: a restart starts new rows)."""
        return self._slider_step_at

    def _coalesce_step(self, name: str, value: Any, who: str, now: datetime) -> bool:
        """Fold a slider step into the audit row of the same person's last step on ``name`` if that row is still
        the setting's newest and the step comes within ``SLIDER_COALESCE_S``: the row keeps its first old value
        and takes this new value and time. False: the step is a change of its own."""
        row = self.store.one("SELECT id, who, source FROM param_audit WHERE name=? ORDER BY id DESC LIMIT 1", (name,))
        steps = self._slider_steps()
        wall = self.wall_clock()
        if (row is None or row["who"] != who or row["source"] != SLIDER or row["id"] not in steps
                or wall - steps[row["id"]] > SLIDER_COALESCE_S):
            return False
        self.store.execute("UPDATE param_audit SET new=?, ts=? WHERE id=?", (json.dumps(value), iso(now), row["id"]))
        steps[row["id"]] = wall
        return True

    def expire_profile(self, now: datetime) -> None:
        """A relaxed profile reverts by itself at the first session boundary after its N sessions (rules §10)."""
        if self.params.profile != "relaxed" or not self.params.profile_sessions_left:
            return
        since = self.store.scalar("SELECT ts FROM param_audit WHERE name='profile' AND new=? ORDER BY id DESC LIMIT 1",
                                  (json.dumps("relaxed"),))
        start = datetime.fromisoformat(since) if since else None
        used = sessions_touched(start, trading_date(now)) if start else 0
        if used >= self.params.profile_sessions_left:
            self.set_params({"profile": "default"}, who="engine", now=now, source="profile_expiry")
            self.store.notify("info", f"relaxed profile expired after {used} sessions: back to default", now)
            self.store.commit()

    def run_protections(self, now: datetime, rules: tuple[ProtectionRule, ...] = RULES) -> list[Firing]:
        """Check the protections at ``now``: record each firing and apply the parameters it tightens."""
        firings = evaluate_protections(self.protections, self.store, self.s, self.params, now, rules)
        for f in firings:
            self.protections.record(f)
            if f.changes:
                self.set_params(f.changes, who=f"protection:{f.rule}", now=now, source="protection")
        return firings
