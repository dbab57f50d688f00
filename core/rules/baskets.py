"""Basket router (rules §8): individual stocks are evidence, short exposure is a basket trade.

A basket asks for its inverse ETF only when, over its members' latest scores
(no older than ``basket_signal_max_age_s``): at least ``min_signals`` members
reported, >= 60 % of them are negative, their mean is <= -0.12, and this held
on 2 consecutive evaluations. The engine then checks the ETF lock (one intent
per ETF per 90 s), conflicting holdings, an existing position or live intent,
and risk. The counter is persisted so a restart does not forget a streak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from core.config import Settings
from core.state.store import Store, iso
from core.universe import Basket, Universe


@dataclass(frozen=True)
class BasketEvaluation:
    basket: Basket
    n_signals: int
    negative_ratio: float
    mean_score: float
    condition: bool
    consecutive: int
    members: dict[str, float]

    @property
    def fires(self) -> bool:
        return self.condition and self.consecutive >= self._needed

    _needed: int = 2

    @property
    def inverted_score(self) -> float:
        """The ETF intent's score: a bearish basket is a bullish inverse ETF."""
        return -self.mean_score


class BasketRouter:
    def __init__(self, universe: Universe, settings: Settings, store: Store) -> None:
        self.universe = universe
        self.s = settings
        self.store = store
        self.consecutive: dict[str, int] = {
            r["name"]: int(r["consecutive"] or 0) for r in store.query("SELECT name, consecutive FROM basket_state")
        }
        self.last_eval: dict[str, float] = {}
        self._unsaved: dict[str, tuple[BasketEvaluation, datetime, str | None, str | None]] = {}
        store.on_flush(self._write_unsaved)
        store.on_rollback(self._unsaved.clear)

    def evaluate(self, basket: Basket, latest: dict[str, tuple[float, float]], now: datetime) -> BasketEvaluation:
        """``latest``: symbol -> (epoch seconds of the score, score)."""
        t = now.timestamp()
        members = {
            m: latest[m][1] for m in basket.members
            if m in latest and t - latest[m][0] <= self.s.basket_signal_max_age_s
        }
        n = len(members)
        neg = sum(1 for v in members.values() if v < 0)
        ratio = neg / n if n else 0.0
        mean = sum(members.values()) / n if n else 0.0
        cond = n >= self.s.basket_min_signals and ratio >= self.s.basket_neg_ratio and mean <= self.s.basket_mean_score
        streak = self.consecutive.get(basket.name, 0) + 1 if cond else 0
        self.consecutive[basket.name] = streak
        ev = BasketEvaluation(basket, n, ratio, mean, cond, streak, members)
        object.__setattr__(ev, "_needed", self.s.basket_consecutive_ticks)
        return ev

    def save(self, ev: BasketEvaluation, now: datetime, *, blocked_by: str | None,
             intent_id: str | None) -> None:
        if self.store.batched:  # a replay: only the batch's last evaluation is written, at its flush
            prev = self._unsaved.get(ev.basket.name)
            if intent_id is None and prev is not None:
                intent_id = prev[3]
            self._unsaved[ev.basket.name] = (ev, now, blocked_by, intent_id)
            return
        self._save_row(ev, now, blocked_by, intent_id)

    def _write_unsaved(self) -> None:
        for ev, now, blocked_by, intent_id in self._unsaved.values():
            self._save_row(ev, now, blocked_by, intent_id)
        self._unsaved.clear()

    def _save_row(self, ev: BasketEvaluation, now: datetime, blocked_by: str | None, intent_id: str | None) -> None:
        row = {
            "name": ev.basket.name, "ts": iso(now), "n_signals": ev.n_signals,
            "negative_ratio": round(ev.negative_ratio, 6), "mean_score": round(ev.mean_score, 6),
            "condition": int(ev.condition), "consecutive": ev.consecutive,
            "members_json": json.dumps({k: round(v, 4) for k, v in sorted(ev.members.items())}),
            "blocked_by": blocked_by,
        }
        if intent_id is not None:
            row["last_intent_id"] = intent_id
        self.store.put("basket_state", row)

    def conflicts_held(self, basket: Basket, held: set[str]) -> list[str]:
        return sorted(held & set(basket.conflicts))
