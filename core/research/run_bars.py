"""The bars behind a saved research run, read again for its price chart (issue 17).

A saved run keeps its trades, equity and metrics, not its bars (a year of minutes for every symbol would be
most of the database). What it keeps is where they came from (``source``: the synthetic market's seed, the
file's name, the Alpaca feed), its sessions and a fingerprint of exactly the bars it replayed
(``runs.feed_fingerprint``). So the bars are read again from the same source, never downloaded:

* synthetic: the market of the run's seed and universe (a day's bars depend on nothing else: not on the range);
* file: the file, when it is still in the data folder (its name resolved inside it by ``core.research.files``:
  a run recording a path outside it, an old or a tampered row, is refused without the file being opened) or is
  the one loaded on the page now;
* Alpaca: the local Parquet cache (``data/cache/alpaca/<feed>/<symbol>/<day>.parquet``), when it holds every
  session of the run; nothing is downloaded for a chart.

and checked against the run's fingerprint: a chart is drawn only on the bars the run traded on (an edited file,
another seed or a changed generator is refused with the reason). A run saved before fingerprints existed is drawn
unverified, and says so.

The run's decisions are not kept either: its chart marks its fills (each trade's entry and exit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from core.clock import UTC, session_bounds, sessions_between
from core.config import Settings, load_settings
from core.feed import MarketFeed
from core.research import files, runs
from core.venues.marketdata import empty_bars
from core.venues.sim.bar_files import ReplayMarket, load_bars
from core.venues.sim.synthetic import SyntheticMarket

UNIVERSE_KEYS = ("tier_a_tickers", "tier_b_tickers", "bench_tickers", "baskets_json")


class RunBarsUnavailable(ValueError):
    """The run's bars cannot be read again (or are not the ones it replayed); the message says why."""


@dataclass
class RunBars:
    market: Any  # a MarketData port over the run's bars
    sessions: list[date]
    symbols: tuple[str, ...]
    verified: bool  # the fingerprint matched (False: the run has none to check against)


def run_sessions(run: dict[str, Any]) -> list[date]:
    src = run.get("source") or {}
    if not src.get("first") or not src.get("last"):
        raise RunBarsUnavailable(f"run #{run.get('id')} does not say which sessions it replayed")
    days = sessions_between(date.fromisoformat(src["first"]), date.fromisoformat(src["last"]))
    if not days:
        raise RunBarsUnavailable(f"run #{run.get('id')}: no session in {src['first']} … {src['last']}")
    return days


def run_settings(run: dict[str, Any], **overrides: Any) -> Settings:
    """The live settings with the run's universe (tiers and baskets), which decides the bars' symbols."""
    params = run.get("params") or {}
    return load_settings(**{k: params[k] for k in UNIVERSE_KEYS if params.get(k) is not None}, **overrides)


def _alpaca_cache(settings: Settings, feed: str, symbols: tuple[str, ...], days: list[date]) -> pd.DataFrame:
    root = Path(settings.alpaca_cache_dir) / feed
    frames, missing = [], []
    for day in days:
        for sym in symbols:
            f = root / sym / f"{day.isoformat()}.parquet"
            if f.exists():
                frames.append(pd.read_parquet(f))
            else:
                missing.append(f"{sym} {day}")
    if missing:
        raise RunBarsUnavailable(f"the local Alpaca cache ({root}) lacks {len(missing)} symbol-days of this run "
                                 f"(first: {missing[0]}); a chart downloads nothing: replay the run to fetch them")
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_bars()


def run_market(run: dict[str, Any], settings: Settings, *, loaded: tuple[str, pd.DataFrame] | None = None,
               data_dir: Path = files.DATA_DIR) -> Any:
    """The run's market from its source (see the module docstring). ``loaded``: (file name, bars) of the file
    the page holds now, used for a file run of that name (no second read). A file run's name is resolved inside
    ``data_dir``."""
    src = run.get("source") or {}
    kind = src.get("kind")
    days = run_sessions(run)
    if kind == "synthetic":
        return SyntheticMarket(int(src.get("seed", settings.seed)), settings.universe, anchor=days[0])
    if kind == "file":
        name = str(src.get("file") or "")
        if loaded is not None and loaded[0] == name:
            return ReplayMarket(loaded[1])
        try:
            path = files.resolve_data_file(name, data_dir)
        except files.FileRefused as e:
            raise RunBarsUnavailable(f"the run's file is not read: {e}") from None
        except files.DataFileMissing:
            raise RunBarsUnavailable(f"the run's file {files.display_name(name)!r} is not in the data folder here: "
                                     f"upload it (or choose it) in “1. Data” to see its candles") from None
        return ReplayMarket(load_bars(path))
    if kind == "alpaca":
        return ReplayMarket(_alpaca_cache(settings, str(src.get("feed", "iex")), settings.universe.all_symbols,
                                          days))
    raise RunBarsUnavailable(f"run #{run.get('id')}: unknown data source {kind!r}")


def load_run_bars(run: dict[str, Any], *, loaded: tuple[str, pd.DataFrame] | None = None,
                  data_dir: Path = files.DATA_DIR) -> RunBars:
    """The run's bars, checked against its fingerprint (RunBarsUnavailable when they differ or cannot be read).
    Checking scores the run's sessions once, as the replay did (about a second for a year)."""
    from core.strategy import load_strategy

    settings = run_settings(run)
    days = run_sessions(run)
    try:
        market = run_market(run, settings, loaded=loaded, data_dir=data_dir)
    except (OSError, ValueError) as e:
        if isinstance(e, RunBarsUnavailable):
            raise
        raise RunBarsUnavailable(f"the run's bars cannot be read: {e}") from e
    want = (run.get("source") or {}).get("fingerprint")
    if not want:
        return RunBars(market, days, settings.universe.all_symbols, verified=False)
    feed = MarketFeed(market, load_strategy(settings.strategy), settings.universe.all_symbols)
    feed.preload_sessions(days)
    got = runs.feed_fingerprint(feed, days[0], days[-1])
    if got != want:
        raise RunBarsUnavailable(f"the bars read again (fingerprint {got}) are not the ones run #{run.get('id')} "
                                 f"replayed ({want}): the source changed since; no chart is drawn on other bars")
    return RunBars(market, days, settings.universe.all_symbols, verified=True)


def session_candles(market: Any, symbol: str, day: date) -> pd.DataFrame:
    """One symbol's 1-minute bars of one session: ts (UTC), open, high, low, close, volume."""
    bounds = session_bounds(day)
    if bounds is None:
        raise ValueError(f"{day} is not a trading session")
    bars = market.bars((symbol,), bounds[0].astimezone(UTC), bounds[1].astimezone(UTC))
    bars = bars[bars["symbol"] == symbol]
    return pd.DataFrame({"ts": pd.to_datetime(bars["timestamp"], utc=True),
                         **{c: bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")}}
                        ).reset_index(drop=True)


def trade_fills(trades: pd.DataFrame, symbol: str, day: date) -> pd.DataFrame:
    """The fills of a saved run's trades in ``symbol`` on ``day`` (New York date): a buy at each entry and a sell
    at each exit (the engine trades long only, baskets through inverse ETFs). ts (UTC), side, price, qty."""
    cols = ["ts", "side", "price", "qty"]
    if trades is None or trades.empty or "symbol" not in trades:
        return pd.DataFrame(columns=cols)
    t = trades[trades["symbol"] == symbol]
    legs = []
    for side, ts, px in (("buy", "entry_ts", "entry_price"), ("sell", "exit_ts", "exit_price")):
        if ts in t and px in t:
            legs.append(pd.DataFrame({"ts": pd.to_datetime(t[ts], utc=True, format="ISO8601"), "side": side,
                                      "price": t[px].astype(float), "qty": t["qty"].astype(float)}))
    if not legs:
        return pd.DataFrame(columns=cols)
    out = pd.concat(legs, ignore_index=True).dropna(subset=["ts", "price"])
    ny = out["ts"].dt.tz_convert("America/New_York").dt.date
    return out[ny == day].sort_values("ts").reset_index(drop=True)


def trade_days(trades: pd.DataFrame, symbol: str | None = None) -> list[date]:
    """New York dates with an entry or exit (of ``symbol``), sorted: where a chart has something to show."""
    if trades is None or trades.empty or "entry_ts" not in trades:
        return []
    t = trades if symbol is None else trades[trades["symbol"] == symbol]
    ts = pd.concat([pd.to_datetime(t["entry_ts"], utc=True, format="ISO8601"),
                    pd.to_datetime(t["exit_ts"], utc=True, format="ISO8601")]).dropna()
    return sorted(set(ts.dt.tz_convert("America/New_York").dt.date))
