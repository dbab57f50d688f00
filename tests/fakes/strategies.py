"""Scripted strategies for tests that start the real app (loaded by ``STRATEGY=tests.fakes.strategies:...``).

A browser test that waits for "the first intent" must not wait on the synthetic market's luck: with this
strategy the first tick of the session already produces one, on any date and at any speed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.strategy import SCORE_COLUMNS, from_wide, to_wide


class BullishNvda:
    """NVDA scores +0.9 on every bar (a long entry at once), every other symbol 0 (below any cutoff)."""

    name = "bullish_nvda"
    warmup_bars = 1
    symbol = "NVDA"
    score = 0.9
    spike = 0.0  # vol_spike of ``symbol``

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        out = bars[["timestamp", "symbol"]].reset_index(drop=True).copy()
        out["score"] = np.where(out["symbol"].to_numpy() == self.symbol, self.score, 0.0)
        out["vol_spike"] = np.where(out["symbol"].to_numpy() == self.symbol, self.spike, 0.0)
        return out


class BullishSpike(BullishNvda):
    """BullishNvda with a volume spike on every bar of its symbol: each new bar is an event the LLM gate
    considers (rules §6), so a tick runs the gate's queries too."""

    name = "bullish_spike"
    spike = 0.8


class PeekAhead:
    """Cheats on purpose (walk-forward leak tests): the score of a bar is the sign of the move from its close to the
    close ``horizon`` bars later, 0 where that bar is not loaded. Its scores on the last bars of a range change
    with the bars after the range, so an in-sample result that used them shows it."""

    name = "peek_ahead"
    warmup_bars = 1
    horizon = 60

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        close = to_wide(bars, "close")
        score = np.sign(close.shift(-self.horizon) - close).fillna(0.0)
        return from_wide({"score": score, "vol_spike": score * 0.0}, bars)


class MorningThree:
    """NVDA, AAPL and MSFT score +0.9 on the bars opening in [10:00, 10:05) New York time, everything else 0: one
    long entry each on any session (tests/test_money_fees.py's live session)."""

    name = "morning_three"
    warmup_bars = 1
    symbols = ("NVDA", "AAPL", "MSFT")

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        out = bars[["timestamp", "symbol"]].reset_index(drop=True).copy()
        ny = pd.to_datetime(out["timestamp"], utc=True).dt.tz_convert("America/New_York")
        minutes = (ny.dt.hour * 60 + ny.dt.minute).to_numpy()
        hit = out["symbol"].isin(self.symbols).to_numpy() & (minutes >= 600) & (minutes < 605)
        out["score"] = np.where(hit, 0.9, 0.0)
        out["vol_spike"] = 0.0
        return out
