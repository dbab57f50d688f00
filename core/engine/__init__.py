"""The engine: one ``Engine.tick(now)`` is the whole cycle, for live and replay alike.

``Engine`` (``tick``) is composed of parts, each a class of this package that gets what it uses in its constructor:

    memory.py     EngineState: the working state in memory (book, protections, cap counts, locks, basket streaks,
                  token buckets, scheduler times, cursors), its restore from SQLite and its reload after a rollback
    params.py     LiveParameters: the live parameters and the rules' vector; audited changes, profile expiry,
                  protections
    protect.py    the protections' window figures and their evaluation
    account.py    Accounts (the AccountState risk decisions read), RiskManager and EntryRisk over core.rules.risk
    decide.py     DecisionChain: due ticker -> score -> gates -> decision row -> intent
    routing.py    BasketRouting: a firing basket -> inverse-ETF intent
    orders.py     OrderFlow: queue, approve/reject, expire, follow, resolve unanswered submissions
    intents.py    order intents and their idempotent submission (plain functions over store and broker)
    ledger.py     FillLedger: fills -> positions -> trades, MAE/MFE, stop checks
    reconcile.py  Reconciliation: adopting the broker's orders and positions before the first trade
    snapshots.py  Snapshots: equity, gauges, token statistics and heartbeat
    closing.py    PositionClosing: Close one position / Flatten all, and the positions' last prices for the UI
    report.py     TickReport
    tick.py       Engine: builds the parts, runs tick() in one transaction, applies the UI's commands
"""

from core.engine.decide import signal_row
from core.engine.report import TickReport
from core.engine.tick import Engine
from core.metrics.display import money

__all__ = ["Engine", "TickReport", "money", "signal_row"]
