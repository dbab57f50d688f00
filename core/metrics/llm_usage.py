"""LLM usage read from the ``llm_calls`` log: the calls of a New York date (what the daily limit counts) and
the spend of a calendar month (what the budget counts). The LLM gate (``core.services.llm``) writes the log and
checks its limits with these; the pages show them."""

from __future__ import annotations

from datetime import datetime

from core.clock import NY, trading_date
from core.state.store import Store

QUEUED = "queued"
CALLED_STATUSES = ("ok", "invalid", "error", "timeout")  # the request reached the model's server


def month_key(now: datetime) -> str:
    """The ``month`` column of a call at ``now``: its New York calendar month."""
    return now.astimezone(NY).strftime("%Y-%m")


def month_spend(store: Store, now: datetime) -> float:
    """LLM spend in the New York calendar month of ``now`` (budget currency)."""
    return float(store.scalar("SELECT COALESCE(SUM(cost), 0) FROM llm_calls WHERE month=?", (month_key(now),))
                 or 0.0)


def calls_today(store: Store, now: datetime) -> int:
    """Calls made or queued on the New York date of ``now`` (what the daily limit counts)."""
    statuses = (QUEUED, *CALLED_STATUSES)
    marks = ",".join("?" * len(statuses))
    return int(store.scalar(f"SELECT COUNT(*) FROM llm_calls WHERE day=? AND status IN ({marks})",
                            (trading_date(now).isoformat(), *statuses)) or 0)
