"""Scoring strategies (rules §3).

A strategy turns 1-minute bars into a score in [-1, 1] (sign = direction,
size = conviction) and a ``vol_spike`` in [0, 1] per symbol and bar. It must be
vectorised over a whole history (replay scores years at once) and causal: the
value at bar t uses bars <= t only, and only the last ``warmup_bars`` of them,
so scoring a short live window gives the same number as scoring all history.

Default: ``MomentumVwapStrategy``

* momentum  m = ln(C_t / C_{t-5}) / (sigma_30 * sqrt(5)): the 5-minute move in
  units of its own recent volatility (sigma_30 = std of 1-minute log returns
  over the last 30 bars);
* VWAP deviation  d = ln(C_t / VWAP_30) / (sigma_30 * sqrt(15)): how far price
  stands from the 30-bar volume-weighted average;
* score = tanh((0.6 m + 0.4 d) / 5), so a 2.5-sigma blend scores ~0.46 and
  pure noise passes a 0.28 cutoff about one bar in ten;
* vol_spike = max(volume part, range part): volume part = clip((V_t / mean(V over
  the previous 30 bars) - 1.5) / 2.5, 0, 1); range part = clip((|r_t| / sigma_30
  - 2) / 3, 0, 1). 1 means "this bar is an event".

A user strategy is any class with ``name``, ``warmup_bars`` and
``score_bars(bars) -> DataFrame``; load it with ``--strategy package.module:Class``.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

SCORE_COLUMNS = ["timestamp", "symbol", "score", "vol_spike"]


@runtime_checkable
class Strategy(Protocol):
    name: str
    warmup_bars: int

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Bars (long format, see core.venues.marketdata) -> columns timestamp, symbol, score, vol_spike."""
        ...


def to_wide(bars: pd.DataFrame, column: str) -> pd.DataFrame:
    return bars.pivot(index="timestamp", columns="symbol", values=column).sort_index()


def from_wide(wide: dict[str, pd.DataFrame], like: pd.DataFrame) -> pd.DataFrame:
    """Stack wide frames back onto the rows of ``like`` (same order as the input bars)."""
    key = pd.MultiIndex.from_arrays([like["timestamp"], like["symbol"]])
    out = pd.DataFrame({"timestamp": like["timestamp"].to_numpy(), "symbol": like["symbol"].to_numpy()})
    for name, frame in wide.items():
        stacked = frame.stack(future_stack=True)
        out[name] = stacked.reindex(key).to_numpy(dtype=float)
    return out


class MomentumVwapStrategy:
    """Short-horizon momentum plus VWAP deviation; see the module docstring."""

    name = "momentum_vwap"

    def __init__(self, mom_window: int = 5, vol_window: int = 30, vwap_window: int = 30, scale: float = 5.0) -> None:
        self.mom_window = mom_window
        self.vol_window = vol_window
        self.vwap_window = vwap_window
        self.scale = scale
        self.warmup_bars = max(vol_window + 1, vwap_window, mom_window + 1) + 1

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        return from_wide(self.score_wide(to_wide(bars, "close"), to_wide(bars, "volume")), bars)

    def score_wide(self, close: pd.DataFrame, volume: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The same scores on wide frames (time x symbol): a year's replay scores without the long format."""
        # intermediates are let go as soon as they are used: a year of bars is ~10 MB per frame
        logc = np.log(close)
        r = logc.diff()
        sigma = r.rolling(self.vol_window, min_periods=self.vol_window).std().clip(lower=1e-5)
        mom = (logc - logc.shift(self.mom_window)) / (sigma * np.sqrt(self.mom_window))
        pv = (close * volume).rolling(self.vwap_window, min_periods=self.vwap_window).sum()
        vwap = pv / volume.rolling(self.vwap_window, min_periods=self.vwap_window).sum()
        del pv
        dev = (logc - np.log(vwap)) / (sigma * np.sqrt(15.0))
        del vwap, logc
        score = np.tanh((0.6 * mom + 0.4 * dev) / self.scale)
        del mom, dev
        prev_vol = volume.shift(1).rolling(self.vol_window, min_periods=self.vol_window).mean()
        vol_part = ((volume / prev_vol - 1.5) / 2.5).clip(0, 1)
        del prev_vol
        rng_part = ((r.abs() / sigma - 2.0) / 3.0).clip(0, 1)
        del r, sigma
        spike = np.maximum(vol_part, rng_part)
        return {"score": score, "vol_spike": spike}


def load_strategy(spec: str) -> Strategy:
    """Instantiate ``package.module:ClassName``; a clear error if it is not a Strategy."""
    if ":" not in spec:
        raise ValueError(f"strategy {spec!r}: expected 'package.module:ClassName'")
    mod_name, cls_name = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"strategy {spec!r}: cannot import {mod_name} ({e})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(f"strategy {spec!r}: {mod_name} has no {cls_name}")
    obj = cls()
    if not isinstance(obj, Strategy):
        raise ValueError(f"strategy {spec!r}: needs name, warmup_bars and score_bars(bars)")
    return obj
