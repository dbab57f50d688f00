"""Which tickers to process now (rules §2, 5): each tier's last processed times and the Bench tickers' pending
events, over the due rule ``core.rules.gates.ticker_due`` and the token buckets."""

from __future__ import annotations

import math
from datetime import datetime

from core.rules.gates import ticker_due
from core.services.buckets import Grant, TokenBuckets
from core.universe import Universe

# Ticks are scheduled on 30 s boundaries; a job that starts a little late must
# not skip a whole cycle, so "due" tolerates this much early arrival.
JITTER_S = 2.0


class TierScheduler:
    def __init__(self, universe: Universe, buckets: TokenBuckets) -> None:
        self.universe = universe
        self.buckets = buckets
        self.last_processed: dict[str, float] = {}
        self.pending_events: dict[str, str] = {}  # bench symbol -> event id

    def get_ticker_tier(self, symbol: str) -> str | None:
        return self.universe.get_ticker_tier(symbol)

    def should_process_ticker_now(self, symbol: str, now: datetime) -> bool:
        tier = self.get_ticker_tier(symbol)
        if tier is None:
            return False
        if tier == "Bench":
            return symbol in self.pending_events
        last = self.last_processed.get(symbol)
        return ticker_due(math.nan if last is None else last, now.timestamp(), self.universe.tier_intervals_s[tier],
                          JITTER_S)

    def consume_api_token_for_ticker(self, symbol: str, now: datetime, *, allow_borrow: bool) -> Grant:
        tier = self.get_ticker_tier(symbol) or "Bench"
        return self.buckets.try_consume(tier, now, allow_borrow=allow_borrow)

    def due_tickers(self, now: datetime) -> list[str]:
        """``should_process_ticker_now`` for every stock, in universe order (one clock read for all)."""
        t = now.timestamp()
        tier_of, intervals, last = self.universe.get_ticker_tier, self.universe.tier_intervals_s, self.last_processed
        out = []
        for s in self.universe.stocks:
            tier = tier_of(s)
            if tier == "Bench":
                if s in self.pending_events:
                    out.append(s)
                continue
            if tier is not None and ticker_due(last.get(s, math.nan), t, intervals[tier], JITTER_S):
                out.append(s)
        return out

    def mark_processed(self, symbol: str, now: datetime) -> None:
        self.last_processed[symbol] = now.timestamp()
        self.pending_events.pop(symbol, None)

    def add_event(self, symbol: str, event_id: str) -> None:
        if self.get_ticker_tier(symbol) == "Bench":
            self.pending_events.setdefault(symbol, event_id)
