"""Where a research run's bars come from, and which symbols it trades.

A run replays one data source: the synthetic market (a seed, no account needed), Alpaca history (downloaded
once into the Parquet cache) or a bar file. Its universe (tiers and baskets) defaults to the live settings
and can be edited per run; every symbol the run needs must have bars, or the run is refused naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from core.universe import Universe

KINDS = ("synthetic", "alpaca", "file")


class UniverseError(ValueError):
    """The run's universe needs a symbol the data does not have."""


@dataclass(frozen=True)
class DataSource:
    kind: str  # one of KINDS
    seed: int = 7  # synthetic
    file_name: str | None = None  # file: its name inside the data folder (core.research.files), stored with the run
    feed: str = "iex"  # alpaca
    label: str | None = None  # file: what is shown (an upload's own name, sanitised); the file name without one

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown data source {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind == "file" and not self.file_name:
            raise ValueError("a file data source needs the file's name")
        if self.kind == "alpaca" and self.feed not in ("iex", "sip"):
            raise ValueError(f"Alpaca feed {self.feed!r}: use iex or sip")

    def describe(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic market, seed {self.seed}"
        if self.kind == "alpaca":
            return f"Alpaca history ({self.feed} feed)"
        return f"file {self.label or self.file_name}"

    def as_dict(self) -> dict[str, Any]:
        """The keys ``core.research.runs`` stores: kind and its seed, file or feed."""
        shown = {"label": self.label} if self.label and self.label != self.file_name else {}
        extra = {"synthetic": {"seed": self.seed}, "file": {"file": self.file_name, **shown},
                 "alpaca": {"feed": self.feed}}[self.kind]
        return {"kind": self.kind, **extra}


    def run_source(self, sessions: list[date]) -> dict[str, Any]:
        """The ``source`` a saved run keeps (``core.research.runs``): this source and the sessions it replayed."""
        return {**self.as_dict(), "description": self.describe(), "first": sessions[0].isoformat(),
                "last": sessions[-1].isoformat(), "sessions": len(sessions)}


def universe_overrides(tier_a: str, tier_b: str, bench: str, baskets_json: str) -> dict[str, str]:
    """The settings a run's universe overrides (validated by ``load_settings`` like an environment value)."""
    return {"tier_a_tickers": tier_a, "tier_b_tickers": tier_b, "bench_tickers": bench, "baskets_json": baskets_json}


def traded_symbols(universe: Universe) -> list[str]:
    """Tier A and Tier B: what the engine trades long (the benchmark's equal-weight basket)."""
    return [*universe.tiers.get("A", ()), *universe.tiers.get("B", ())]


def check_universe(universe: Universe, data_symbols: Iterable[str]) -> list[str]:
    """Refuse a universe whose tier symbols or basket ETFs have no bars; return the data's symbols it leaves unused.

    A basket's index ETF (QQQ, SOXX) is only the synthetic market's driver: it may be missing from a file.
    """
    have = set(data_symbols)
    missing = [s for s in universe.stocks if s not in have]
    if missing:
        raise UniverseError(f"no bars for {', '.join(missing)} (in the run's tiers): remove "
                            f"{'it' if len(missing) == 1 else 'them'} from the tiers or use data that has "
                            f"{'it' if len(missing) == 1 else 'them'}")
    for b in universe.baskets:
        if b.inverse_etf not in have:
            raise UniverseError(f"basket {b.name} trades {b.inverse_etf}, which has no bars in this data: remove the "
                                f"basket for this run or add {b.inverse_etf}'s bars")
    used = set(universe.all_symbols)
    return sorted(have - used)
