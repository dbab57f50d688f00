"""The engine: one ``Engine.tick(now)`` is the whole cycle, for live and replay alike.

``Engine`` (``tick``) is built from one part per concern, each a module of this package:

    tick.py       construction, tick() in one transaction, broker and database failures, step order, commands
    memory.py     the in-memory state, its restore from SQLite, the account state decisions read
    params.py     live parameters: load, audited changes, profile expiry, protections
    decide.py     the one decision chain: due ticker -> score -> gates -> decision row -> intent
    routing.py    basket routing: a firing basket -> inverse-ETF intent
    orders.py     order flow: queue, approve/reject, expire, follow, resolve unanswered submissions
    intents.py    order intents and their idempotent submission (plain functions over store and broker)
    ledger.py     fills -> positions -> trades, MAE/MFE, stop checks
    reconcile.py  adopting the broker's orders and positions before the first trade
    snapshots.py  equity, gauges, token statistics and heartbeat
    closing.py    Close one position / Flatten all (commands), and the positions' last prices for the UI
"""

from core.engine.decide import signal_row
from core.engine.tick import Engine, TickReport
from core.metrics.display import money

__all__ = ["Engine", "TickReport", "money", "signal_row"]
