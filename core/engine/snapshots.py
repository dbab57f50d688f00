"""What each tick leaves for the UI and for a restart: the equity row once a minute, the portfolio gauges, the
token-bucket statistics and the heartbeat.

A replay writes its journal in batches; then only the batch's last tick's gauges, tick state and heartbeat matter,
and they are written once, at the flush (``_write_batched_state``).
"""

from __future__ import annotations

import json
from datetime import datetime

from core.clock import NY
from core.config import LiveParams
from core.rules.ratelimit import LocalTokenBuckets
from core.state.store import Store, iso
from core.venues.broker import Broker


class Snapshots:
    """Equity, gauges, token statistics and heartbeat, per tick or once per replay batch.

    Other parts it calls: ``portfolio_summary``, ``save_tick_state`` (memory); ``position_marks`` (closing).
    """

    store: Store
    broker: Broker
    buckets: LocalTokenBuckets
    params: LiveParams
    _last_equity_minute: int | None
    _summary_at: datetime | None
    _tick_state_at: datetime | None

    def _snapshots(self, now: datetime) -> None:
        minute = int(now.timestamp()) // 60
        if minute != self._last_equity_minute:
            self._last_equity_minute = minute
            acct = self.broker.get_account(now)
            self.store.upsert("equity", {"ts": iso(now), "equity": round(acct.equity, 4),
                                         "cash": round(acct.cash, 4),
                                         "exposure": round(acct.equity - acct.cash, 4)})
            if self.store.batched:
                self._summary_at = now
            else:
                self._save_summary(now)
        for m, tier, req, granted, borrowed in self.buckets.drain_stats(now):
            self.store.upsert("token_stats", {
                "minute": datetime.fromtimestamp(m * 60, NY).isoformat(), "tier": tier, "requested": req,
                "granted": granted, "borrowed": borrowed,
            })
        if self.store.batched:  # only the last tick's values matter: written once, at the batch's flush
            self._tick_state_at = now
            return
        self._save_heartbeat(now)

    def _save_summary(self, now: datetime) -> None:
        # the UI (maybe another process) reads the gauges from here, not from the engine object
        summary = self.portfolio_summary(now)
        summary["ts"] = iso(now)
        self.store.set_meta("portfolio_summary", json.dumps(summary))
        self.store.set_meta("position_marks", json.dumps(self.position_marks(now)))  # the positions table's prices

    def _save_heartbeat(self, now: datetime) -> None:
        self.save_tick_state()
        self.store.put("heartbeat", {"name": "tick", "ts": iso(now), "info": json.dumps({
            "paused": self.params.paused, "auto_mode": self.params.auto_mode})})

    def _write_batched_state(self) -> None:
        """At a replay batch's flush: the gauges, the tick state and the heartbeat of the batch's last tick."""
        if self._summary_at is not None:
            self._save_summary(self._summary_at)
            self._summary_at = None
        if self._tick_state_at is not None:
            self._save_heartbeat(self._tick_state_at)
            self._tick_state_at = None
