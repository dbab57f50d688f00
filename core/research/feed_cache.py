"""Scored feeds kept on disk: a replay, a sweep, a walk-forward step or a worker loads its bars and scores instead
of generating (or reading) and scoring them again.

``preload(feed, sessions, settings)`` does what ``MarketFeed.preload_sessions(sessions)`` does. On the first call
for a feed's data, strategy, symbols and sessions it scores as before and then writes what the feed holds to
``FEED_CACHE_DIR`` (default ``data/cache/feeds``, git-ignored); later calls, in any process, read it back. A feed
read back holds the same numbers, bit for bit, and behaves as the one it was saved from (a live engine extends it
with ``ensure``; a research feed is only read).

The key of an entry (``feed_key``) is a SHA-256 of

* the data: the synthetic market's seed, anchor (its first session: prices chain from there), universe, start
  prices, volatility and jump settings, and a hash of the generator's source (core/venues/sim/synthetic.py), so a
  changed generator never serves stale bars; a bars file, an upload or Alpaca history (all a ``ReplayMarket``):
  a hash of the bars' content (every column's values, dtypes and names), so a changed file or a different
  download misses. Any other market (the live Alpaca feed, a test's fake) is not cached;
* the strategy: its class, its name, its parameters (the instance's attributes; a strategy holding anything but
  numbers, strings and lists of them is not cached) and a hash of the file its class is defined in;
* the symbols (in the feed's order), every session of the range, and the code that scores: hashes of
  core/feed.py, core/clock.py and this file, the numpy, pandas and exchange_calendars versions.

An entry is a folder named by its key: one ``.npy`` file per array (read with ``np.load(mmap_mode="r")``:
read-only, and processes reading the same entry share its pages) and ``meta.json`` (shapes, dtypes, byte sizes,
``loaded_until``, the raw tail's columns). It is written into a temporary folder and renamed into place
(``os.replace``), so a killed process leaves at most a ``.tmp-*`` folder (removed after an hour), never half an
entry. An entry that does not read back whole (a missing or truncated file, a shape or size that is not the
one meta.json names, unreadable JSON) is deleted and rebuilt. The folder is kept under ``FEED_CACHE_MB``
(default 2,048 MB; 0 turns the cache off): after a write, the entries used least recently go first (a read
touches its entry's meta.json). A cache that cannot be written (a full disk, no permission) costs the run
nothing but the time: the feed is scored as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
import weakref
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.clock import UTC
from core.feed import MarketFeed
from core.venues.marketdata import FrameMarket
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket

LAYOUT = 1  # the entry's layout; a change makes every older entry a miss
ARRAYS = ("ts", "open", "high", "low", "close", "volume", "score", "vol_spike")
STALE_TMP_S = 3600.0  # a temporary folder this old belongs to a process that was killed mid-write
_ROOT = Path(__file__).resolve().parents[2]

# a frame's content hash, kept while the market holds the same frame object (a sweep asks once per step)
_FRAME_HASHES: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


# ---------------------------------------------------------------- the key
def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (remembered while its size and modification time stay the same)."""
    p = Path(path)
    st = p.stat()
    k = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    got = _FILE_HASHES.get(k)
    if got is None:
        got = _FILE_HASHES[k] = hashlib.sha256(p.read_bytes()).hexdigest()
    return got


def frame_hash(frame: pd.DataFrame) -> str:
    """A hash of a bars frame's content: column names, dtypes and every value, in row order."""
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((list(map(str, frame.columns)), [str(t) for t in frame.dtypes], len(frame))).encode())
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
            values = col.dt.tz_localize(None) if isinstance(col.dtype, pd.DatetimeTZDtype) else col
            h.update(np.ascontiguousarray(values.to_numpy(dtype="datetime64[ns]").view(np.int64)).data)
        elif pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            h.update(np.ascontiguousarray(col.to_numpy()).data)
        else:  # text (symbols): the codes of the distinct values, and the values themselves
            codes, uniques = pd.factorize(col, use_na_sentinel=True)
            h.update(np.ascontiguousarray(codes.astype(np.int64)).data)
            h.update(json.dumps([None if pd.isna(u) else str(u) for u in uniques]).encode())
    return h.hexdigest()


def data_fingerprint(market: Any) -> dict[str, Any] | None:
    """What the market's bars depend on; None for a market whose bars cannot be named (not cached), among them
    one whose methods were replaced on the instance (a test hiding ``bars_wide``)."""
    if any(callable(getattr(type(market), k, None)) for k in getattr(market, "__dict__", {})):
        return None
    if type(market) is SyntheticMarket:
        # a day's bars are a function of (seed, date, universe) and the generator's settings: the anchor and
        # the order days were made in do not change them
        return {"kind": "synthetic", "seed": market.seed, "universe": dataclasses.asdict(market.universe),
                "symbols": list(market.symbols), "universe_key": market.universe_key,
                "start_prices": [float(x).hex() for x in market._log_p0], "minute_vol": float(market.minute_vol).hex(),
                "jump_prob": float(market.jump_prob).hex(), "generator": file_hash(inspect.getfile(SyntheticMarket))}
    if type(market) in (ReplayMarket, FrameMarket):
        got = _FRAME_HASHES.get(market)
        if got is None or got[0] != id(market.frame):
            got = (id(market.frame), frame_hash(market.frame))
            _FRAME_HASHES[market] = got
        return {"kind": "bars", "content": got[1]}
    return None


def _plain(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return v is None or isinstance(v, (bool, int, float, str))


def strategy_fingerprint(strategy: Any) -> dict[str, Any] | None:
    """The strategy's class, name, parameters and source file's hash; None when one of them cannot be named."""
    cls = type(strategy)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # a built-in or a class made at run time
        return None
    try:
        params = dict(vars(strategy))
    except TypeError:  # __slots__: the parameters cannot be listed
        return None
    if source is None or not Path(source).is_file() or not _plain(params):
        return None
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "name": str(getattr(strategy, "name", "")),
            "params": {k: (float(v).hex() if isinstance(v, float) else v) for k, v in sorted(params.items())},
            "source": file_hash(source)}


def code_fingerprint() -> dict[str, str]:
    import exchange_calendars

    core = _ROOT / "core"
    return {"feed": file_hash(core / "feed.py"), "clock": file_hash(core / "clock.py"),
            "cache": file_hash(__file__), "numpy": np.__version__, "pandas": pd.__version__,
            "exchange_calendars": exchange_calendars.__version__}


def feed_key(feed: MarketFeed, sessions: list[date], chunk_sessions: int = 21) -> tuple[str, dict[str, Any]] | None:
    """(the key of a feed preloaded over ``sessions``, what it is made of), or None: not cached."""
    data = data_fingerprint(feed.market)
    strategy = strategy_fingerprint(feed.strategy)
    if data is None or strategy is None:
        return None
    parts = {"layout": LAYOUT, "data": data, "strategy": strategy, "symbols": list(feed.symbols),
             "sessions": [d.isoformat() for d in sessions], "chunk_sessions": chunk_sessions,
             "code": code_fingerprint()}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]
    return key, parts


# ---------------------------------------------------------------- the raw tail (a few rows of long-format bars)
def _tail_columns(tail: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[dict[str, str]]] | None:
    """The tail's columns as plain numpy arrays (no pickles) and how to make them back; None: a column of
    another kind (the entry is then not written)."""
    arrays: dict[str, np.ndarray] = {}
    spec: list[dict[str, str]] = []
    for i, name in enumerate(tail.columns):
        col = tail[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            arrays[f"tail{i}"] = col.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
            spec.append({"name": str(name), "kind": "datetime", "dtype": str(col.dtype), "tz": str(col.dt.tz)})
        elif pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            arr = col.to_numpy()
            if arr.dtype == object:
                return None
            arrays[f"tail{i}"] = arr
            spec.append({"name": str(name), "kind": "number", "dtype": str(col.dtype)})
        elif col.map(lambda v: isinstance(v, str)).all():
            arrays[f"tail{i}"] = np.array(col.tolist(), dtype=str)
            spec.append({"name": str(name), "kind": "text", "dtype": str(col.dtype)})
        else:
            return None
    return arrays, spec


def _tail_frame(arrays: dict[str, np.ndarray], spec: list[dict[str, str]]) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {}
    for i, c in enumerate(spec):
        arr = np.asarray(arrays[f"tail{i}"])
        if c["kind"] == "datetime":
            s = pd.Series(arr).dt.tz_localize("UTC").dt.tz_convert(c["tz"])
        elif c["kind"] == "text":
            s = pd.Series(arr.tolist(), dtype=object)
        else:
            s = pd.Series(arr)
        cols[c["name"]] = s.astype(pd.api.types.pandas_dtype(c["dtype"]))
    return pd.DataFrame(cols)


# ---------------------------------------------------------------- the folder
class FeedCache:
    """The entries under ``root``, kept under ``max_bytes``."""

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    @classmethod
    def from_settings(cls, settings: Any) -> FeedCache | None:
        mb = int(getattr(settings, "feed_cache_mb", 0) or 0)
        root = getattr(settings, "feed_cache_dir", None)
        if mb <= 0 or not root:
            return None
        return cls(root, mb * 1024 * 1024)

    def entry(self, key: str) -> Path:
        return self.root / key

    # -------------------------------------------------------- read
    def load(self, key: str, feed: MarketFeed) -> bool:
        """Fill an empty ``feed`` from the entry ``key``; False when there is none or it does not read back whole
        (a broken entry is deleted: the caller scores and writes it again)."""
        path = self.entry(key)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            return False
        try:
            got = self._read(path, key, len(feed.symbols))
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            self._remove(path)
            return False
        arrays, loaded_until, tail = got
        for name in ARRAYS:
            setattr(feed, name, arrays[name])
        feed._raw_tail = tail
        feed.loaded_until = loaded_until
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # used now: the last to be evicted
        return True

    def _read(self, path: Path, key: str, n_symbols: int
              ) -> tuple[dict[str, np.ndarray], datetime | None, pd.DataFrame | None]:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("layout") != LAYOUT or meta.get("key") != key:
            raise ValueError("not this entry")
        files: dict[str, Any] = meta["files"]
        for fname, size in files.items():
            if (path / fname).stat().st_size != size:
                raise ValueError(f"{fname}: {size} bytes expected")
        arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in meta["arrays"].items():
            # a view without the memmap class: the arrays behave as any other (read-only) ndarray
            arr = np.asarray(np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False))
            if list(arr.shape) != list(shape) or str(arr.dtype) != dtype:
                raise ValueError(f"{name}: {arr.shape} {arr.dtype}, not {shape} {dtype}")
            arrays[name] = arr
        rows = len(arrays["ts"])
        for name in ARRAYS[1:]:
            if arrays[name].shape != (rows, n_symbols):
                raise ValueError(f"{name}: {arrays[name].shape}, not ({rows}, {n_symbols})")
        until = meta["loaded_until"]
        loaded_until = datetime.fromisoformat(until).astimezone(UTC) if until is not None else None
        tail = None
        if meta["tail"] is not None:
            tail = _tail_frame({k: v for k, v in arrays.items() if k.startswith("tail")}, meta["tail"])
            if len(tail) != meta["tail_rows"]:
                raise ValueError("tail rows")
        return arrays, loaded_until, tail

    # -------------------------------------------------------- write
    def store(self, key: str, feed: MarketFeed, parts: dict[str, Any]) -> bool:
        """Write the preloaded ``feed`` as entry ``key`` (atomically), then trim the folder; False when it was not
        written (nothing to keep, a tail of another kind, larger than the whole cache, or the disk refused)."""
        if feed.loaded_until is None or not len(feed.ts):
            return False
        arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(feed, name)) for name in ARRAYS}
        tail_spec: list[dict[str, str]] | None = None
        tail_rows = 0
        if feed._raw_tail is not None:
            got = _tail_columns(feed._raw_tail)
            if got is None:
                return False
            tail_arrays, tail_spec = got
            arrays.update(tail_arrays)
            tail_rows = len(feed._raw_tail)
        if sum(a.nbytes for a in arrays.values()) > self.max_bytes:
            return False
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            files: dict[str, int] = {}
            for name, arr in arrays.items():
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, arr, allow_pickle=False)
                files[f"{name}.npy"] = (tmp / f"{name}.npy").stat().st_size
            meta = {"layout": LAYOUT, "key": key, "files": files,
                    "arrays": {n: [list(a.shape), str(a.dtype)] for n, a in arrays.items()},
                    "loaded_until": feed.loaded_until.isoformat(), "tail": tail_spec, "tail_rows": tail_rows,
                    "made_of": parts}
            (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
            try:
                os.replace(tmp, self.entry(key))
            except OSError:  # another process wrote the same entry first: theirs is as good
                self._remove(tmp)
                return False
        except OSError:
            self._remove(tmp)
            return False
        self.trim(keep=key)
        return True

    # -------------------------------------------------------- size
    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every entry, least recently used first."""
        out: list[tuple[float, int, Path]] = []
        if not self.root.is_dir():
            return out
        for p in self.root.iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                size = sum(f.stat().st_size for f in p.iterdir())
                used = (p / "meta.json").stat().st_mtime if (p / "meta.json").exists() else p.stat().st_mtime
            except OSError:  # deleted meanwhile by another process
                continue
            out.append((used, size, p))
        out.sort(key=lambda e: (e[0], e[2].name))
        return out

    def trim(self, keep: str | None = None) -> None:
        """Delete the least recently used entries until the folder holds at most ``max_bytes`` (``keep``, the
        entry just written, last of all), and temporary folders left by killed processes."""
        now = time.time()
        with contextlib.suppress(OSError):
            for p in self.root.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if now - p.stat().st_mtime > STALE_TMP_S:
                        self._remove(p)
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:  # least recently used first
            if total <= self.max_bytes:
                break
            if p.name == keep:
                continue
            self._remove(p)
            total -= size

    @staticmethod
    def _remove(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the one call
def preload(feed: MarketFeed, sessions: list[date], settings: Any = None, *, cache: FeedCache | None = None) -> str:
    """``feed.preload_sessions(sessions)``, through the cache of ``settings`` (FEED_CACHE_DIR, FEED_CACHE_MB) or
    ``cache``. Returns what happened: ``hit`` (read back), ``miss`` (scored, then written), ``off`` (no cache, a
    feed that is already loaded or no session) or ``uncached`` (a market or strategy the key cannot name)."""
    cache = cache or (FeedCache.from_settings(settings) if settings is not None else None)
    if cache is None or not sessions or feed.loaded_until is not None or len(feed.ts):
        feed.preload_sessions(sessions)
        return "off"
    try:
        got = feed_key(feed, sessions)
    except OSError:  # a source file that cannot be read: its hash cannot name the entry
        got = None
    if got is None:
        feed.preload_sessions(sessions)
        return "uncached"
    key, parts = got
    if cache.load(key, feed):
        return "hit"
    feed.preload_sessions(sessions)
    cache.store(key, feed, parts)
    return "miss"
