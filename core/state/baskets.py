"""The baskets' streaks in memory (rules §8), written through to ``basket_state``.

One row per basket: its last evaluation (members, ratio, mean, whether the condition held, the streak, what blocked
the ETF) and its last intent. A restart takes the streak back with the time of its evaluation, so the streak rule
(``core.rules.baskets.basket_streak``) can tell a restart gap from the next tick. A replay writes only each batch's
last evaluation, at the batch's flush.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from core.clock import trading_date
from core.state.store import Store, iso


@dataclass(frozen=True)
class BasketEvaluation:
    name: str
    n_signals: int
    negative_ratio: float
    mean_score: float
    condition: bool
    consecutive: int
    members: dict[str, float]
    fires: bool

    @property
    def inverted_score(self) -> float:
        """The ETF intent's score: a bearish basket is a bullish inverse ETF."""
        return -self.mean_score


class BasketStreaks:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.streak: dict[str, int] = {}
        self.at: dict[str, float] = {}  # POSIX seconds of the last evaluation
        self.session: dict[str, int] = {}  # its New York trading date, as an ordinal
        for r in store.query("SELECT name, consecutive, ts FROM basket_state"):
            self.streak[r["name"]] = int(r["consecutive"] or 0)
            if r["ts"]:
                ts = datetime.fromisoformat(r["ts"])
                self.at[r["name"]] = ts.timestamp()
                self.session[r["name"]] = trading_date(ts).toordinal()
        self._unsaved: dict[str, tuple[BasketEvaluation, datetime, str | None, str | None]] = {}
        store.on_flush(self._write_unsaved)
        store.on_rollback(self._unsaved.clear)

    def previous(self, name: str) -> tuple[int, float, int]:
        """(streak, time, session) of the basket's last evaluation; (0, -inf, -1) when there was none."""
        return self.streak.get(name, 0), self.at.get(name, -math.inf), self.session.get(name, -1)

    def update(self, name: str, streak: int, now: float, session: int) -> None:
        self.streak[name], self.at[name], self.session[name] = streak, now, session

    def save(self, ev: BasketEvaluation, now: datetime, *, blocked_by: str | None, intent_id: str | None) -> None:
        if self.store.batched:  # a replay: only the batch's last evaluation is written, at its flush
            prev = self._unsaved.get(ev.name)
            if intent_id is None and prev is not None:
                intent_id = prev[3]
            self._unsaved[ev.name] = (ev, now, blocked_by, intent_id)
            return
        self._save_row(ev, now, blocked_by, intent_id)

    def _write_unsaved(self) -> None:
        for ev, now, blocked_by, intent_id in self._unsaved.values():
            self._save_row(ev, now, blocked_by, intent_id)
        self._unsaved.clear()

    def _save_row(self, ev: BasketEvaluation, now: datetime, blocked_by: str | None, intent_id: str | None) -> None:
        row = {
            "name": ev.name, "ts": iso(now), "n_signals": ev.n_signals,
            "negative_ratio": round(ev.negative_ratio, 6), "mean_score": round(ev.mean_score, 6),
            "condition": int(ev.condition), "consecutive": ev.consecutive,
            "members_json": json.dumps({k: round(v, 4) for k, v in sorted(ev.members.items())}),
            "blocked_by": blocked_by,
        }
        if intent_id is not None:
            row["last_intent_id"] = intent_id
        self.store.put("basket_state", row)
