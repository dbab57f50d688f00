"""The scored feed on disk (core/research/feed_cache.py): a feed read back gives the same replay to the last
bit, every input of the key misses when it changes, a broken or half-written entry is rebuilt, the folder stays
under its size. Every test uses its own folder (tmp_path), never one an earlier run left."""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.clock import NY
from core.config import load_settings
from core.feed import MarketFeed
from core.research import feed_cache
from core.research.feed_cache import FeedCache, feed_key, preload
from core.strategy import MomentumVwapStrategy
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket
from tests.golden_replays import tables

START = date(2025, 3, 3)
ARRAYS = feed_cache.ARRAYS


def sessions(n: int, start: date = START) -> list[date]:
    from core.clock import trading_sessions

    return trading_sessions(start, n)


def synthetic_feed(seed: int = 7, anchor: date = START, strategy: Any = None) -> MarketFeed:
    s = load_settings()
    market = SyntheticMarket(seed, universe=s.universe, anchor=anchor)
    return MarketFeed(market, strategy or MomentumVwapStrategy(), s.universe.all_symbols)


def bars_frame(days: int = 4, seed: int = 5) -> pd.DataFrame:
    return SyntheticMarket(seed, universe=load_settings().universe, anchor=START).frame_for_sessions(days)


def file_feed(frame: pd.DataFrame) -> MarketFeed:
    return MarketFeed(ReplayMarket(frame), MomentumVwapStrategy(), load_settings().universe.all_symbols)


def assert_same_feed(a: MarketFeed, b: MarketFeed) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name  # bit for bit, NaNs included
    assert a.loaded_until == b.loaded_until and a.loaded_until.tzinfo is b.loaded_until.tzinfo
    if a._raw_tail is None:
        assert b._raw_tail is None
    else:
        pd.testing.assert_frame_equal(a._raw_tail, b._raw_tail, check_exact=True)


def cache(tmp_path: Path, mb: int = 2048) -> FeedCache:
    return FeedCache(tmp_path / "feeds", mb * 1024 * 1024)


# ---------------------------------------------------------------- a replay from the cache is the same replay
@pytest.mark.parametrize("source", ["synthetic", "file"])
def test_a_replay_on_a_cached_feed_writes_the_same_database(tmp_path, monkeypatch, source):
    """run_replay twice with the cache: the first scores and writes the entry, the second reads it back (it does
    not score); both databases, every table, are the same as a run without the cache."""
    from core.research.replay import run_replay

    bars = None
    if source == "file":
        bars = tmp_path / "bars.csv"
        bars_frame(3, seed=11).to_csv(bars, index=False)
    scored: list[int] = []
    real = MarketFeed.preload_sessions
    monkeypatch.setattr(MarketFeed, "preload_sessions", lambda self, *a, **k: (scored.append(1), real(self, *a, **k)))
    dbs = []
    for i, mb in enumerate((0, 2048, 2048)):  # no cache; cold; warm
        s = load_settings(auto_mode=True, cutoff_delta=-0.05, feed_cache_dir=str(tmp_path / "feeds"),
                          feed_cache_mb=mb)
        db = str(tmp_path / f"run{i}.db")
        res = run_replay(s, days=3, seed=7, start=START, bars_file=bars, db_path=db, decisions="full")
        res.store.close()
        dbs.append((db, res.stats))
    assert len(scored) == 2  # the third run read the feed back
    assert len(cache(tmp_path).entries()) == 1
    first = tables(dbs[0][0])
    assert sum(len(rows) for rows in first.values()) > 100 and first["fills"], "a replay that trades"
    for db, stats in dbs[1:]:
        assert tables(db) == first
        assert {k: v for k, v in stats.items() if k != "elapsed_s"} == \
               {k: v for k, v in dbs[0][1].items() if k != "elapsed_s"}


def test_shared_feed_reads_the_cache(tmp_path):
    """A sweep's feed (shared_feed, also each Dask worker's) is read back the second time, equal to the first."""
    from core.research.replay import shared_feed

    s = load_settings(feed_cache_dir=str(tmp_path / "feeds"))
    a = shared_feed(s, days=2, seed=3, start=START)
    b = shared_feed(s, days=2, seed=3, start=START)
    assert not b.close.flags.writeable and a.close.flags.writeable  # b's arrays are the entry's, read-only
    assert_same_feed(a, b)


class LongOnly(MomentumVwapStrategy):
    """A strategy with ``score_bars`` only (a user's): the feed scores the long format and keeps its raw tail."""

    score_wide = None  # type: ignore[assignment]

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        from core.strategy import from_wide, to_wide

        return from_wide(MomentumVwapStrategy.score_wide(self, to_wide(bars, "close"), to_wide(bars, "volume")),
                         bars)


@pytest.mark.parametrize("source", ["synthetic", "file", "long format"])
def test_a_feed_read_back_extends_as_the_one_it_was_saved_from(tmp_path, source):
    """What the engine does with a feed after the preload (``ensure`` and ``load`` of later days, through the
    raw tail for long-format bars) gives the same arrays on a feed read back."""
    frame = bars_frame(6) if source == "file" else None
    make = (lambda: file_feed(frame)) if frame is not None else synthetic_feed
    if source == "long format":
        make = lambda: synthetic_feed(strategy=LongOnly())  # noqa: E731
    c = cache(tmp_path)
    cold, warm = make(), make()
    assert preload(cold, sessions(3), cache=c) == "miss"
    assert preload(warm, sessions(3), cache=c) == "hit"
    assert_same_feed(cold, warm)
    before = len(cold.ts)
    later = datetime.combine(sessions(5)[-1], datetime.min.time(), tzinfo=NY) + timedelta(hours=17)  # after the close
    for f in (cold, warm):
        f.ensure(later)
    assert len(cold.ts) >= before + 2 * 390  # two more sessions loaded and scored
    assert_same_feed(cold, warm)


# ---------------------------------------------------------------- what the key is made of
def test_every_input_of_the_key_misses_when_it_changes(tmp_path):
    days = sessions(2)
    frame = bars_frame(3)
    changed = frame.copy()
    changed.loc[100, "close"] = changed.loc[100, "close"] * 1.0001
    base = feed_key(synthetic_feed(), days)
    variants = {
        "seed": feed_key(synthetic_feed(seed=8), days),
        "strategy parameter": feed_key(synthetic_feed(strategy=MomentumVwapStrategy(scale=4.0)), days),
        "sessions": feed_key(synthetic_feed(), sessions(3)),
        "bars file": feed_key(file_feed(frame), days),
        "changed bar": feed_key(file_feed(changed), days),
    }
    keys = [base] + list(variants.values())
    assert all(k is not None for k in keys)
    assert len({k[0] for k in keys}) == len(keys), variants  # all different
    assert feed_key(synthetic_feed(), days)[0] == base[0]  # and stable
    # a day's synthetic bars do not depend on the anchor (core.venues.sim.synthetic): one entry serves both
    assert feed_key(synthetic_feed(anchor=date(2025, 2, 3)), days)[0] == base[0]
    assert feed_key(file_feed(frame.copy()), days)[0] == variants["bars file"][0]  # content, not the object

    # a changed seed, parameter or bar file: preload scores again, and the new entry is kept beside the old
    c = cache(tmp_path)
    assert preload(synthetic_feed(), days, cache=c) == "miss"
    assert preload(synthetic_feed(seed=8), days, cache=c) == "miss"
    assert preload(synthetic_feed(strategy=MomentumVwapStrategy(scale=4.0)), days, cache=c) == "miss"
    assert preload(file_feed(frame), days, cache=c) == "miss"
    assert preload(file_feed(changed), days, cache=c) == "miss"
    assert preload(synthetic_feed(), days, cache=c) == "hit"
    assert preload(file_feed(frame.copy()), days, cache=c) == "hit"
    assert len(c.entries()) == 5


def test_a_changed_generator_or_strategy_source_misses(tmp_path, monkeypatch):
    """The generator's and the strategy's source files are in the key: an edit to either is a new key."""
    days = sessions(1)
    base = feed_key(synthetic_feed(), days)[0]
    real = feed_cache.file_hash
    for edited in ("synthetic.py", "strategy.py"):
        monkeypatch.setattr(feed_cache, "file_hash",
                            lambda p, e=edited: real(p) + ("x" if str(p).endswith(e) else ""))
        assert feed_key(synthetic_feed(), days)[0] != base, edited
    monkeypatch.setattr(feed_cache, "file_hash", real)
    assert feed_key(synthetic_feed(), days)[0] == base


def test_markets_and_strategies_the_key_cannot_name_are_not_cached(tmp_path):
    class OtherMarket(SyntheticMarket):
        pass

    class Opaque(MomentumVwapStrategy):
        def __init__(self) -> None:
            super().__init__()
            self.model = object()  # not a plain parameter

    s = load_settings()
    c = cache(tmp_path)
    hidden = synthetic_feed()
    hidden.market.bars_wide = None  # a method replaced on the instance
    for feed in (MarketFeed(OtherMarket(7, universe=s.universe, anchor=START), MomentumVwapStrategy(),
                            s.universe.all_symbols),
                 synthetic_feed(strategy=Opaque()), hidden):
        assert preload(feed, sessions(1), cache=c) == "uncached"
        assert len(feed.ts) > 0
    assert c.entries() == []
    off = synthetic_feed()
    assert preload(off, sessions(1), load_settings(feed_cache_mb=0)) == "off" and len(off.ts) > 0


# ---------------------------------------------------------------- broken and half-written entries
def _break_truncate(entry: Path) -> None:
    p = entry / "score.npy"
    p.write_bytes(p.read_bytes()[:-800])


def _break_meta(entry: Path) -> None:
    (entry / "meta.json").write_text("{not json")


def _break_missing(entry: Path) -> None:
    (entry / "close.npy").unlink()


def _break_garbage(entry: Path) -> None:
    p = entry / "ts.npy"
    p.write_bytes(b"\0" * p.stat().st_size)  # the right size, no .npy header


def _break_shape(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta["arrays"]["open"][0][0] += 1
    (entry / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [_break_truncate, _break_meta, _break_missing, _break_garbage, _break_shape])
def test_a_broken_entry_is_ignored_and_rebuilt(tmp_path, damage):
    c = cache(tmp_path)
    good = synthetic_feed()
    assert preload(good, sessions(2), cache=c) == "miss"
    (entry,) = [p for _, _, p in c.entries()]
    damage(entry)
    again = synthetic_feed()
    assert preload(again, sessions(2), cache=c) == "miss"  # scored again, not read from the broken entry
    assert_same_feed(good, again)
    third = synthetic_feed()
    assert preload(third, sessions(2), cache=c) == "hit"  # and written whole again
    assert_same_feed(good, third)


def test_a_write_killed_halfway_leaves_no_entry(tmp_path, monkeypatch):
    """A process killed while it writes leaves a temporary folder, never an entry: the next run scores and
    writes; a temporary folder older than an hour is removed when an entry is written."""
    c = cache(tmp_path)
    real_save, saved = np.save, []

    class Killed(BaseException):
        pass

    def save_then_die(f, arr, **kw):
        if len(saved) == 3:
            raise Killed  # as SIGKILL: no cleanup code runs
        saved.append(1)
        real_save(f, arr, **kw)

    monkeypatch.setattr(feed_cache.np, "save", save_then_die)
    with pytest.raises(Killed):
        preload(synthetic_feed(), sessions(1), cache=c)
    monkeypatch.setattr(feed_cache.np, "save", real_save)
    (tmp,) = list(c.root.iterdir())
    assert tmp.name.startswith(".tmp-") and c.entries() == []
    assert preload(synthetic_feed(), sessions(1), cache=c) == "miss"
    assert tmp.exists()  # a young temporary folder may still be a live writer's
    old = time.time() - feed_cache.STALE_TMP_S - 10
    os.utime(tmp, (old, old))
    assert preload(synthetic_feed(), sessions(2), cache=c) == "miss"
    assert not tmp.exists() and len(c.entries()) == 2


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(tmp_path):
    blocker = tmp_path / "feeds"
    blocker.write_text("a file where the folder should be")
    feed = synthetic_feed()
    assert preload(feed, sessions(1), cache=FeedCache(blocker, 1 << 30)) == "miss"
    assert len(feed.ts) > 0


# ---------------------------------------------------------------- the size
def test_the_least_recently_used_entries_go_first(tmp_path):
    one = cache(tmp_path)
    assert preload(synthetic_feed(seed=1), sessions(2), cache=one) == "miss"
    size = one.entries()[0][1]
    c = FeedCache(one.root, int(size * 2.5))  # room for two entries of this size
    assert preload(synthetic_feed(seed=2), sessions(2), cache=c) == "miss"
    time.sleep(0.02)
    assert preload(synthetic_feed(seed=1), sessions(2), cache=c) == "hit"  # seed 1 used last: seed 2 is older
    assert preload(synthetic_feed(seed=3), sessions(2), cache=c) == "miss"  # a third: seed 2 goes
    assert len(c.entries()) == 2 and sum(e[1] for e in c.entries()) <= c.max_bytes
    assert preload(synthetic_feed(seed=1), sessions(2), cache=c) == "hit"
    assert preload(synthetic_feed(seed=3), sessions(2), cache=c) == "hit"
    assert preload(synthetic_feed(seed=2), sessions(2), cache=c) == "miss"
    tiny = FeedCache(tmp_path / "tiny", 1000)  # smaller than any entry: nothing is written
    assert preload(synthetic_feed(seed=1), sessions(1), cache=tiny) == "miss" and tiny.entries() == []
