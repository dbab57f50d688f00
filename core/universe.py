"""Tiers, baskets, inverse ETFs and conflicting holdings (rules §2).

All of it is configuration (``Settings``); this module turns it into a lookup
object so the engine never hard-codes a ticker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Tier = Literal["A", "B", "Bench"]
TIERS: tuple[Tier, ...] = ("A", "B", "Bench")


@dataclass(frozen=True)
class Basket:
    name: str
    members: tuple[str, ...]
    inverse_etf: str
    conflicts: tuple[str, ...]
    index_etf: str  # the long index the inverse ETF tracks (-3x); used by the synthetic market


@dataclass(frozen=True)
class Universe:
    tiers: dict[str, tuple[str, ...]]
    baskets: tuple[Basket, ...]
    tier_intervals_s: dict[str, int] = field(default_factory=lambda: {"A": 30, "B": 60})

    @cached_property
    def stocks(self) -> tuple[str, ...]:
        return tuple(s for t in TIERS for s in self.tiers.get(t, ()))

    @property
    def etfs(self) -> tuple[str, ...]:
        out: list[str] = []
        for b in self.baskets:
            for s in (b.index_etf, b.inverse_etf):
                if s not in out:
                    out.append(s)
        return tuple(out)

    @property
    def all_symbols(self) -> tuple[str, ...]:
        return self.stocks + self.etfs

    @cached_property
    def _tier_of(self) -> dict[str, Tier]:
        out: dict[str, Tier] = {}
        for tier in TIERS:
            for sym in self.tiers.get(tier, ()):
                out.setdefault(sym, tier)
        return out

    @cached_property
    def _basket_of(self) -> dict[str, Basket]:
        out: dict[str, Basket] = {}
        for b in self.baskets:
            for m in b.members:
                out.setdefault(m, b)
        return out

    def get_ticker_tier(self, symbol: str) -> Tier | None:
        return self._tier_of.get(symbol)

    def basket_of(self, symbol: str) -> Basket | None:
        return self._basket_of.get(symbol)

    def basket_for_etf(self, etf: str) -> Basket | None:
        for b in self.baskets:
            if b.inverse_etf == etf:
                return b
        return None


DEFAULT_UNIVERSE = Universe(
    tiers={"A": ("NVDA", "TSLA", "AAPL"), "B": ("MSFT", "AMZN", "META"), "Bench": ("GOOGL", "AMD", "AVGO")},
    baskets=(
        Basket("MEGATECH", ("AAPL", "MSFT", "AMZN", "META", "GOOGL", "TSLA"), "SQQQ", ("QQQ", "TQQQ"), "QQQ"),
        Basket("SEMIS", ("NVDA", "AMD", "AVGO"), "SOXS", ("SOXX", "SOXL"), "SOXX"),
    ),
)


def get_ticker_tier(symbol: str, universe: Universe = DEFAULT_UNIVERSE) -> Tier | None:
    return universe.get_ticker_tier(symbol)
