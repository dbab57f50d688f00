"""The engine: one ``Engine.tick(now)`` is the whole cycle, for live and replay alike."""

from core.engine.tick import Engine, TickReport, money, signal_row

__all__ = ["Engine", "TickReport", "money", "signal_row"]
