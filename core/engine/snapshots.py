"""What each tick leaves for the UI and for a restart: the equity row once a minute, the portfolio gauges, the
token-bucket statistics and the heartbeat.

A replay writes its journal in batches; then only the batch's last tick's gauges, tick state and heartbeat matter,
and they are written once, at the flush (``_write_batched_state``).
"""

from __future__ import annotations

import json
from datetime import datetime

from core.clock import NY
from core.engine.account import Accounts, RiskManager
from core.engine.closing import PositionClosing
from core.engine.memory import EngineState
from core.engine.params import LiveParameters
from core.state.store import Store, iso
from core.venues.broker import Broker


class Snapshots:
    """Equity, gauges, token statistics and heartbeat, per tick or once per replay batch."""

    def __init__(self, store: Store, broker: Broker, state: EngineState, live: LiveParameters, accounts: Accounts,
                 risk: RiskManager, closing: PositionClosing) -> None:
        self.store = store
        self.broker = broker
        self.state = state
        self.live = live
        self.accounts = accounts
        self.risk = risk
        self.closing = closing
        self._summary_at: datetime | None = None  # batch mode: the last minute's gauges, written at the flush
        self._tick_state_at: datetime | None = None  # batch mode: the last tick, whose state the flush writes
        store.on_flush(self.write_batched_state)

    def portfolio_summary(self, now: datetime) -> dict[str, object]:
        return self.risk.portfolio_summary(self.accounts.account_state(now))

    def take(self, now: datetime) -> None:
        minute = int(now.timestamp()) // 60
        if minute != self.state.last_equity_minute:
            self.state.last_equity_minute = minute
            acct = self.broker.get_account(now)
            self.store.upsert("equity", {"ts": iso(now), "equity": round(acct.equity, 4),
                                         "cash": round(acct.cash, 4),
                                         "exposure": round(acct.equity - acct.cash, 4)})
            if self.store.batched:
                self._summary_at = now
            else:
                self._save_summary(now)
        for m, tier, req, granted, borrowed in self.state.buckets.drain_stats(now):
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
        # the positions table's prices
        self.store.set_meta("position_marks", json.dumps(self.closing.position_marks(now)))

    def _save_heartbeat(self, now: datetime) -> None:
        self.state.save_tick_state()
        self.store.put("heartbeat", {"name": "tick", "ts": iso(now), "info": json.dumps({
            "paused": self.live.params.paused, "auto_mode": self.live.params.auto_mode})})

    def write_batched_state(self) -> None:
        """At a replay batch's flush: the gauges, the tick state and the heartbeat of the batch's last tick."""
        if self._summary_at is not None:
            self._save_summary(self._summary_at)
            self._summary_at = None
        if self._tick_state_at is not None:
            self._save_heartbeat(self._tick_state_at)
            self._tick_state_at = None
