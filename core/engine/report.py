"""What one tick did, as the runtime, the replay driver and the tests read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class TickReport:
    now: datetime
    processed: int = 0
    actionable: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    intents: list[str] = field(default_factory=list)
    fills: int = 0
    commands: int = 0
    broker_error: str | None = None
    storage_error: str | None = None  # the database refused a write: the tick traded nothing
