"""Research runs a trader keeps: saved, listed, renamed, deleted, compared and downloaded.

One row of the ``research_runs`` table (core.state.store) per kept run. Every part is a standard JSON document:
NaN and +/-Infinity are stored as null (a ratio with no losing trade has no finite value), timestamps as ISO
8601 strings in UTC.

``source`` describes the bars the run used; the keys read here (others are kept as given):

* ``kind``: ``synthetic`` | ``file`` | ``alpaca``; with ``seed`` (synthetic), ``file`` (its name inside the data
  folder, ``core.research.files``; an upload's ``label`` is its own name, shown only) or ``feed`` (Alpaca's
  ``iex``/``sip``);
* ``first``/``last``: the first and last session (``YYYY-MM-DD``); ``symbols``: the symbols;
* ``fingerprint``: ``feed_fingerprint`` of the bars, equal for two runs on the same data.

A run as ``load_run`` returns it is a dict with every part decoded: ``created_at`` an aware UTC datetime,
``equity`` a DataFrame (ts: UTC datetimes, equity), ``trades`` a DataFrame (the trade dicts as saved; their
timestamps are ISO strings), each benchmark's ``curve`` a DataFrame like ``equity``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from core.clock import session_bounds
from core.exports import to_csv_bytes
from core.state.store import Store
from core.views import with_ny_times

KINDS = ("replay", "sweep", "walk_forward", "search", "session_replay")
NAME_MAX = 80
HEADLINE = ("total_return", "sharpe", "max_drawdown", "trades")  # the metrics ``list_runs`` shows
LIST_COLUMNS = ["id", "created_at", "name", "kind", "source", "first", "last", "fingerprint", *HEADLINE]
FINGERPRINT_CHARS = 16
_JSON_PARTS = ("source", "params", "metrics", "benchmark", "equity", "trades", "detail")


# ------------------------------------------------------------------ validation
def clean_name(name: str) -> str:
    """The name as stored: stripped; blank or longer than ``NAME_MAX`` characters is refused."""
    if not isinstance(name, str):
        raise ValueError(f"a run name must be text, not {type(name).__name__}")
    out = name.strip()
    if not out:
        raise ValueError("a run needs a name: the name is empty")
    if len(out) > NAME_MAX:
        raise ValueError(f"run name {out[:20]!r}... is {len(out)} characters long; the limit is {NAME_MAX}")
    return out


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"run kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


# ------------------------------------------------------------------ JSON
def _plain(value: Any) -> Any:
    """``value`` as plain JSON types: non-finite floats become None, numpy scalars Python numbers, times ISO
    strings, an equity-like frame (ts, equity) a list of [ts, equity] pairs, any other frame a list of rows."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        if list(value.columns) == ["ts", "equity"]:
            return _curve_pairs(value)
        return [_plain(r) for r in value.to_dict(orient="records")]
    if isinstance(value, (list, tuple, pd.Series, np.ndarray)):
        return [_plain(v) for v in list(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):
        return None
    if isinstance(value, (datetime, np.datetime64)):  # pd.Timestamp included
        return _iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):  # pd.NA and the like
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _dumps(value: Any, **kw: Any) -> str:
    # allow_nan=False: should anything non-finite slip past ``_plain`` it fails here, not in a reader later
    return json.dumps(_plain(value), allow_nan=False, **kw)


def _iso_utc(ts: Any) -> str:
    t = pd.Timestamp(ts)
    if t.tzinfo is None:  # as the bar loaders and alpaca-py read a naive time
        t = t.tz_localize("UTC")
    return t.tz_convert("UTC").isoformat()


def _curve_pairs(curve: pd.DataFrame | list | None) -> list[list[Any]]:
    """[[iso_ts, equity], ...] from a frame with columns ts and equity, or from pairs / {"ts", "equity"} dicts."""
    if curve is None:
        return []
    if isinstance(curve, pd.DataFrame):
        missing = [c for c in ("ts", "equity") if c not in curve.columns]
        if missing:
            raise ValueError(f"an equity curve needs columns ts and equity; missing {', '.join(missing)}")
        rows: list[Any] = list(zip(curve["ts"].tolist(), curve["equity"].tolist(), strict=True))
    else:
        rows = [(r["ts"], r["equity"]) if isinstance(r, dict) else tuple(r) for r in curve]
    out = []
    for row in rows:
        if len(row) != 2:
            raise ValueError(f"an equity sample is [ts, equity], got {row!r}")
        ts, eq = row
        out.append([_iso_utc(ts), _plain(eq)])
    return out


def _curve_frame(pairs: list[list[Any]] | None) -> pd.DataFrame:
    pairs = pairs or []
    ts = pd.to_datetime([p[0] for p in pairs], utc=True, format="ISO8601").as_unit("ns")
    eq = pd.Series([np.nan if p[1] is None else float(p[1]) for p in pairs], dtype=float)
    return pd.DataFrame({"ts": ts, "equity": eq.to_numpy()})


def _trade_rows(trades: pd.DataFrame | list | None) -> list[dict[str, Any]]:
    if trades is None:
        return []
    rows = trades.to_dict(orient="records") if isinstance(trades, pd.DataFrame) else list(trades)
    for r in rows:
        if not isinstance(r, dict):
            raise ValueError(f"a trade is a dict of its fields, got {r!r}")
    return [_plain(r) for r in rows]


def _as_dict(value: dict | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, not {type(value).__name__}")
    return value


# ------------------------------------------------------------------ store
def _write(store: Store, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
    """One statement committed now, whatever the store's mode: a kept run must survive the app stopping
    (``flush`` commits even in a replay's batch mode or inside a live tick; it writes the journal's buffered
    parts with it, as every commit of this connection does)."""
    with store.lock:
        try:
            cur = store.execute(sql, params)
        except sqlite3.OperationalError as e:
            if "readonly" in str(e):
                raise PermissionError(f"{store.path} is open read-only: keep runs through a writable Store") from e
            raise
        store.flush()
        return cur


def _read(store: Store, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows, or none from a database made before the table existed (a read-only store cannot add it)."""
    try:
        return store.query(sql, params)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def save_run(store: Store, *, name: str, kind: str, source: dict, params: dict, metrics: dict, created_at: datetime,
             equity: pd.DataFrame | list | None = None, trades: pd.DataFrame | list | None = None,
             benchmark: dict | None = None, detail: dict | None = None) -> int:
    """Keep a run; returns its id. Committed before it returns."""
    if not isinstance(created_at, datetime) or created_at.tzinfo is None:
        raise ValueError(f"created_at must be a timezone-aware datetime, got {created_at!r}")
    row = {
        "created_at": created_at.astimezone(UTC).isoformat(),
        "name": clean_name(name),
        "kind": _check_kind(kind),
        "source": _dumps(_as_dict(source, "source")),
        "params": _dumps(_as_dict(params, "params")),
        "metrics": _dumps(_as_dict(metrics, "metrics")),
        "benchmark": _dumps(_as_dict(benchmark, "benchmark")),
        "equity": _dumps(_curve_pairs(equity)),
        "trades": _dumps(_trade_rows(trades)),
        "detail": _dumps(_as_dict(detail, "detail")),
    }
    cols = list(row)
    cur = _write(store, f"INSERT INTO research_runs({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                 [row[c] for c in cols])
    return int(cur.lastrowid or 0)


def source_summary(source: dict[str, Any]) -> str:
    """A short label of the data: "synthetic seed 7", "file bars.csv", "alpaca iex"."""
    kind = str(source.get("kind") or "")
    if kind == "synthetic":
        seed = source.get("seed")
        return "synthetic" if seed is None else f"synthetic seed {seed}"
    if kind == "file":
        f = source.get("label") or source.get("file")  # an upload's own name, else the stored one
        return f"file {PurePath(str(f)).name}" if f else "file"
    if kind == "alpaca":
        feed = source.get("feed")
        return f"alpaca {feed}" if feed else "alpaca"
    return kind


def list_runs(store: Store) -> pd.DataFrame:
    """One row per kept run, newest first: id, created_at, name, kind, source summary, first and last session,
    fingerprint and the headline metrics (missing, i.e. NaN, when the run has no such metric)."""
    rows = _read(store, "SELECT id, created_at, name, kind, source, metrics FROM research_runs "
                        "ORDER BY created_at DESC, id DESC")
    out = []
    for r in rows:
        src = json.loads(r["source"] or "{}")
        m = json.loads(r["metrics"] or "{}")
        out.append({"id": r["id"], "created_at": r["created_at"], "name": r["name"], "kind": r["kind"],
                    "source": source_summary(src), "first": src.get("first"), "last": src.get("last"),
                    "fingerprint": src.get("fingerprint"), **{k: m.get(k) for k in HEADLINE}})
    return pd.DataFrame(out, columns=LIST_COLUMNS)


def load_run(store: Store, run_id: int) -> dict[str, Any]:
    """Every part of a run decoded (see the module docstring); KeyError for an id that is not kept."""
    rows = _read(store, "SELECT * FROM research_runs WHERE id=?", (int(run_id),))
    if not rows:
        raise KeyError(f"no saved research run with id {run_id} (deleted, or never saved in {store.path})")
    r = rows[0]
    run: dict[str, Any] = {"id": r["id"], "created_at": datetime.fromisoformat(r["created_at"]),
                           "name": r["name"], "kind": r["kind"]}
    for part in _JSON_PARTS:
        run[part] = json.loads(r[part]) if r[part] else ({} if part not in ("equity", "trades") else [])
    run["equity"] = _curve_frame(run["equity"])
    run["trades"] = pd.DataFrame(run["trades"])
    for b in run["benchmark"].values():
        if isinstance(b, dict) and isinstance(b.get("curve"), list):
            b["curve"] = _curve_frame(b["curve"])
    return run


def rename_run(store: Store, run_id: int, name: str) -> None:
    """A new name (the same rules as ``save_run``); KeyError for an id that is not kept."""
    cur = _write(store, "UPDATE research_runs SET name=? WHERE id=?", (clean_name(name), int(run_id)))
    if cur.rowcount == 0:
        raise KeyError(f"no saved research run with id {run_id} to rename")


def delete_run(store: Store, run_id: int) -> bool:
    """Forget a run. False when there was no such run (deleted already, e.g. from another window)."""
    return _write(store, "DELETE FROM research_runs WHERE id=?", (int(run_id),)).rowcount > 0


# ------------------------------------------------------------------ comparing and downloading
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def compare_runs(a: dict, b: dict, metrics: list[str] | None = None) -> pd.DataFrame:
    """Two runs' metrics side by side: columns metric, a's name, b's name, delta (= b - a; None when either
    value is missing or not a finite number). ``metrics``: the rows, by default every metric either run has,
    a's order first. Equal names get the run id appended so the two columns stay apart."""
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    names = metrics if metrics is not None else list(dict.fromkeys([*ma, *mb]))
    col_a, col_b = str(a.get("name", "a")), str(b.get("name", "b"))
    if col_a == col_b or {col_a, col_b} & {"metric", "delta"}:
        col_a, col_b = f"{col_a} (#{a.get('id', 'a')})", f"{col_b} (#{b.get('id', 'b')})"
    va = [ma.get(m) for m in names]
    vb = [mb.get(m) for m in names]
    delta = [None if x is None or y is None else y - x for x, y in
             zip(map(_number, va), map(_number, vb), strict=True)]
    # object columns: a missing value stays None (a float column would turn it into NaN)
    return pd.DataFrame({"metric": pd.Series(names, dtype=object), col_a: pd.Series(va, dtype=object),
                         col_b: pd.Series(vb, dtype=object), "delta": pd.Series(delta, dtype=object)})


def run_json(run: dict) -> str:
    """The whole run as one standard JSON document (curves as [iso_ts, equity] pairs, trades as rows)."""
    out = dict(run)
    out["equity"] = _curve_pairs(run.get("equity"))
    out["trades"] = _trade_rows(run.get("trades"))
    return _dumps(out, indent=2)


def _frame(value: pd.DataFrame | list | None) -> pd.DataFrame:
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame(value or [])


def run_trades_csv(run: dict) -> bytes:
    """The run's trades as CSV (UTF-8, escaped by ``core.exports``), one row per trade, the columns as saved;
    entry_ts and exit_ts in UTC, each followed by the New York time the page's chart uses (``entry_ts_ny``,
    ``exit_ts_ny``)."""
    frame = _frame(run.get("trades"))
    return to_csv_bytes(with_ny_times(frame, ("entry_ts", "exit_ts"))) if len(frame.columns) else b""


def run_equity_csv(run: dict) -> bytes:
    """The run's equity curve as CSV (UTF-8): ts (ISO 8601 UTC), ts_ny (New York time, as the chart), equity."""
    pairs = _curve_pairs(run.get("equity"))
    return to_csv_bytes(with_ny_times(pd.DataFrame(pairs, columns=["ts", "equity"]), ("ts",)))


# ------------------------------------------------------------------ fingerprints
def bars_fingerprint(ts: np.ndarray, *arrays: np.ndarray, labels: Sequence[str] = ()) -> str:
    """A short stable digest (sha256, first 16 hex characters) of bar arrays: equal data, equal fingerprint; one
    changed value, a different one. Hashes the raw bytes (NaN-safe, where ``==`` is not), with each array's
    shape so the same numbers laid out differently differ; ``labels`` (e.g. the symbols) are hashed too."""
    h = hashlib.sha256()
    for label in labels:
        h.update(str(label).encode("utf-8") + b"\0")
    h.update(b"ts" + str(np.shape(ts)).encode())
    h.update(np.ascontiguousarray(ts, dtype="<i8").tobytes())
    for a in arrays:
        arr = np.asarray(a, dtype="<f8")
        arr = np.where(np.isnan(arr), np.nan, arr)  # one NaN bit pattern: a missing bar is a missing bar
        h.update(b"a" + str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:FINGERPRINT_CHARS]


def feed_fingerprint(feed: Any, first: date, last: date) -> str:
    """``bars_fingerprint`` of a ``core.feed.MarketFeed``'s bars (ts, open, high, low, close, volume, with its
    symbols) from the open of session ``first`` to the close of session ``last``."""
    a, b = session_bounds(first), session_bounds(last)
    if a is None or b is None:
        raise ValueError(f"{first if a is None else last} is not a trading session")
    lo, hi = int(a[0].timestamp()), int(b[1].timestamp())
    ts = np.asarray(feed.ts)
    rows = (ts >= lo) & (ts < hi)  # bar open times: the last bar opens a minute before the close
    return bars_fingerprint(ts[rows], *(np.asarray(getattr(feed, c))[rows]
                                        for c in ("open", "high", "low", "close", "volume")),
                            labels=tuple(feed.symbols))
