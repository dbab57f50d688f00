"""The Research page's glue: loading the chosen bars, running and saving replays, sweeps and out-of-sample
checks through ``core.research``, and drawing saved runs. Streamlit lives here, the research itself in core."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import streamlit as st

import core.research.replay as replay_mod  # looked up at call time: tests may spy on run_replay
from core import views
from core.clock import NY
from core.config import Settings, load_settings
from core.exports import csv_safe, to_csv_bytes
from core.metrics.display import NA, PERCENT_FIGURES, figure_text, missing_text, plain_number
from core.metrics.figures import ANNUALISED, MIN_ANNUALISED_SESSIONS
from core.research import cluster, files, record, runs, search, sources, walkforward
from core.state.store import Store
from core.universe import Universe
from core.venues.sim import bar_files
from ui import charts
from ui.state import AppContext, secret_overrides, send_command
from ui.text import plain, plain_list

SOURCE_LABELS = {"synthetic": "Synthetic market", "alpaca": "Alpaca history", "file": "Your file"}
METRICS = ["total_return", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "expectancy",
           "trades", "exposure", "stop_out_rate", "flip_flop_rate", "cagr", "pnl_total", "pnl_realized"]
DATA_DIR = files.DATA_DIR  # uploads are kept in it (uploads/), files are picked from it; nothing is read outside it
SYMBOLS_SHOWN = 20  # a caption lists this many of a file's symbols, then "… and K more"


# ---------------------------------------------------------------- data
def today() -> date:
    """What "the future" means for history: the New York date of the wall clock, not of a simulated market."""
    from core.clock import trading_date

    return trading_date(datetime.now(UTC))


def has_alpaca_keys(settings: Settings) -> bool:
    return all(getattr(settings, n) is not None and getattr(settings, n).get_secret_value().strip()
               for n in ("alpaca_api_key", "alpaca_secret_key"))


def data_files() -> list[str]:
    """Bar files a user keeps under data/, by their names inside it (Alpaca's cache and stored uploads excluded)."""
    return files.list_data_files(DATA_DIR)


@st.cache_data(max_entries=4, show_spinner="Checking the file…")
def _load_bytes(data: bytes, label: str) -> pd.DataFrame:
    return bar_files.load_bars_bytes(data, label)


def load_upload(data: bytes, client_name: str) -> tuple[str, str, pd.DataFrame]:
    """An upload checked, then kept under a name the server chose (``core.research.files.store_upload``):
    (stored name inside data/, the upload's own name for display, bars). The client's name is never a path."""
    label = files.display_name(client_name)
    frame = _load_bytes(data, label)  # refused before anything is written
    return files.store_upload(data, label, DATA_DIR), label, frame


@st.cache_data(max_entries=4, show_spinner="Checking the file…")
def _load_path(path: str, mtime: float) -> pd.DataFrame:  # keyed by the file's time: an edited file reloads
    return bar_files.load_bars(path)


def load_path(name: str) -> pd.DataFrame:
    """A file picked from data/ by its name inside it; a name leading out of data/ is refused before it is read."""
    path = files.resolve_data_file(name, DATA_DIR)
    return _load_path(str(path), path.stat().st_mtime)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    return bar_files.bars_summary(frame)


def file_caption(label: str, summary: dict[str, Any]) -> str:
    """A loaded file in one line, as plain text: its name and symbols escaped, the first ``SYMBOLS_SHOWN`` symbols."""
    return (f"{plain(label)}: {summary['rows']:,} bars, {len(summary['symbols']):,} symbols "
            f"({plain_list(summary['symbols'], SYMBOLS_SHOWN)}), {summary['sessions']} sessions "
            f"{summary['first']} … {summary['last']}")


def symbols_text(symbols: list[str]) -> str:
    return plain_list(symbols, SYMBOLS_SHOWN)


def frame_sessions(frame: pd.DataFrame) -> list[date]:
    return sorted(frame["timestamp"].dt.tz_convert(NY).dt.date.unique())


def frame_symbols(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["symbol"].unique())


def universe_symbols(settings: Settings) -> list[str]:
    return list(settings.universe.all_symbols)


def alpaca_cache_note(settings: Settings, feed: str, symbols: list[str], first: date, last: date) -> str:
    md = replay_mod.research_market_data(settings, feed)
    got = md.cached_days(symbols, first, last)
    if not got.partial and not got.missing:
        return f"All {len(got.full)} days are in the local cache ({settings.alpaca_cache_dir}/{feed}): no download."
    return (f"{got}: the other {len(got.partial) + len(got.missing)} days will be downloaded at Run "
            f"(at most {settings.alpaca_requests_per_min} requests a minute).")


def base_overrides(universe_set: dict[str, str], source: sources.DataSource | None) -> dict[str, Any]:
    # research runs always submit (nobody approves inside a replay); keys from secrets.toml reach Alpaca history
    return {**secret_overrides(), **universe_set, "auto_mode": True, "db_path": ":memory:", "market_data": "synthetic",
            "broker": "sim", "seed": source.seed if source is not None else 7}


def universe_line(u: Universe) -> str:
    tiers = "; ".join(f"Tier {t}: {', '.join(u.tiers.get(t, ())) or '–'}" for t in ("A", "B", "Bench"))
    baskets = ", ".join(f"{b.name} → {b.inverse_etf}" for b in u.baskets) or "none"
    return f"{tiers}; baskets: {baskets}"


def prepare_market(source: sources.DataSource, frame: pd.DataFrame | None, settings: Settings,
                   run_settings: Settings, sessions: list[date], today: date, bar: Any) -> Any:
    """The market a run replays: None for the synthetic one (built from the seed), the file's or Alpaca's bars
    otherwise. Alpaca days come from the cache when present and are downloaded (with progress) when not."""
    if source.kind == "synthetic":
        return None
    if source.kind == "file":
        return bar_files.ReplayMarket(frame)
    if not has_alpaca_keys(run_settings):
        raise ValueError("Alpaca history needs ALPACA_API_KEY and ALPACA_SECRET_KEY (.streamlit/secrets.toml)")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Alpaca history: day {done}/{total}")

    s = run_settings.model_copy(update={"alpaca_feed": source.feed})
    hist = replay_mod.alpaca_history(s, sessions[0], sessions[-1], today=today, progress=progress)
    sources.check_universe(run_settings.universe, hist["symbol"].unique())
    return bar_files.ReplayMarket(hist)


def run_settings_for(universe_set: dict[str, str], source: sources.DataSource, params: dict[str, Any]) -> Settings:
    return load_settings(**{**base_overrides(universe_set, source), **params})


PREPARING = "Preparing the research engine (first run after install: compiling it takes about a minute)…"


def prepare_research_engine() -> None:
    """The compiled kernel in this process before a replay: at once when the app's warm-up has loaded it, else
    under a spinner that says why the first run waits (core.research.warm.warm_up)."""
    from core.research import warm

    if warm.kernel_ready():
        return
    with st.spinner(PREPARING, show_time=True):
        warm.warm_up()


def _progress(bar: Any, label: str) -> Any:
    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {done}/{total}")
        note_progress(done, total)
    return progress


# ---------------------------------------------------------------- runs ended by a click
# Cancel (or any click, or leaving the page) ends the script where it is: no code after the run's call executes,
# so nothing could say so. A marker is set before a run and removed after it; the next render of the page finds a
# marker that was never removed and says that run was cancelled.
_RUNNING = "_r_running"


def mark_running(slot: str, what: str, unit: str = "steps") -> None:
    """A run starts in ``slot`` ("replay" or "sweep"); ``what`` names it in the message if it is cancelled, ``unit``
    what its progress counts."""
    st.session_state[_RUNNING] = {**st.session_state.get(_RUNNING, {}),
                                  slot: {"what": what, "unit": unit, "done": 0, "total": 0}}
    st.session_state["_r_slot"] = slot


def note_progress(done: int, total: int) -> None:
    """How far the running run got (the cancelled message says it)."""
    running = st.session_state.get(_RUNNING, {}).get(st.session_state.get("_r_slot", ""))
    if running is not None:
        running.update(done=done, total=total)


def mark_done(slot: str) -> None:
    """The run in ``slot`` finished (or was refused with a message): nothing to say next time."""
    st.session_state.get(_RUNNING, {}).pop(slot, None)


def show_cancelled(slot: str) -> None:
    """The message of a run in ``slot`` that a click ended, once."""
    r = st.session_state.get(_RUNNING, {}).pop(slot, None)
    if r is None:
        return
    far = f" after {r['done']:,} of {r['total']:,} {r['unit']}" if r["total"] else ""
    st.warning(f"{r['what']} was cancelled{far}: nothing of it was saved.")


def replay_and_save(db_path: str, label: str, source: sources.DataSource, params: dict[str, Any],
                    sessions: list[date], market: Any, bar: Any, *, decisions: str) -> tuple[int, str]:
    universe_set = {k: v for k, v in params.items() if k in ("tier_a_tickers", "tier_b_tickers", "bench_tickers",
                                                             "baskets_json")}
    knobs = {k: v for k, v in params.items() if k not in universe_set}
    s = run_settings_for(universe_set, source, knobs)
    prepare_research_engine()
    res = replay_mod.run_replay(s, start=sessions[0], end=sessions[-1], days=len(sessions), seed=source.seed,
                                market=market, progress=_progress(bar, f"{label}: ticks"), decisions=decisions)
    try:
        used = sessions_of(res.stats, sessions)
        rec = record.replay_record(res, s, source, params, used)
    finally:
        res.store.close()
    run_id = _save(db_path, lambda w: record.save_replay(w, label, rec, created_at=datetime.now(UTC)))
    text = (f"{plain(source.describe())}, {used[0]} … {used[-1]} ({plural(len(used), 'session')}), cutoff delta "
            f"{params['cutoff_delta']:+.2f}, cooldown {params['mixer_cooldown_s']} s: "
            f"{rec['metrics'].get('trades', 0)} trades, total P&L {rec['metrics']['pnl_total']:+,.2f} "
            f"(realised {rec['metrics']['pnl_realized']:+,.2f})")
    return run_id, text


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def sessions_of(stats: dict[str, Any], asked: list[date]) -> list[date]:
    """The sessions a replay really covered (its stats say), which are the ones asked for."""
    first, last = stats.get("first_session"), stats.get("last_session")
    if not first or not last:
        return asked
    return [d for d in asked if date.fromisoformat(first) <= d <= date.fromisoformat(last)]


def _save(db_path: str, write: Any) -> int:
    writer = Store(db_path)  # the page's own store is read-only; a saved run is one short write
    try:
        return int(write(writer))
    finally:
        writer.close()


def sweep_and_save(db_path: str, source: sources.DataSource, universe_set: dict[str, str], grid: dict[str, list],
                   sessions: list[date], market: Any, workers: int, bar: Any, *,
                   cluster: str | None = None) -> dict[str, Any]:
    base = base_overrides(universe_set, source)
    prepare_research_engine()
    with _cluster_errors():
        rows = replay_mod.run_sweep(base, grid, days=len(sessions), start=sessions[0], end=sessions[-1],
                                    seed=source.seed, market=market, workers=workers,
                                    progress=_sweep_progress(bar, "sweep"), cluster=cluster)
    src = source.run_source(sessions)
    name = f"sweep {len(rows)} cells, {sessions[0]} … {sessions[-1]}"
    odds = search.sweep_odds(rows, rows.returns)  # the best cell by total_return: PBO and deflated Sharpe
    run_id = _save(db_path, lambda w: runs.save_run(w, name=name, kind="sweep", source=src,
                                                    params={"grid": grid, **universe_set}, metrics={},
                                                    detail={"grid": rows, "refused": rows.refused,
                                                            "where": rows.where, "returns": rows.returns,
                                                            "overfitting": odds},
                                                    created_at=datetime.now(UTC)))
    return {"id": run_id, "grid": grid, "rows": rows, "sessions": len(sessions),
            "used": f"{plain(source.describe())}, {sessions[0]} … {sessions[-1]} ({len(sessions)} sessions)",
            "params": list(grid), "refused": rows.refused, "where": rows.where, "overfitting": odds}


def walk_forward_and_save(db_path: str, source: sources.DataSource, universe_set: dict[str, str],
                          grid: dict[str, list], sessions: list[date], market: Any, workers: int, folds: int,
                          metric: str, bar: Any, *, cluster: str | None = None) -> dict[str, Any]:
    base = base_overrides(universe_set, source)
    prepare_research_engine()
    with _cluster_errors():
        result = walkforward.walk_forward(base, grid, sessions=sessions, seed=source.seed, market=market,
                                          folds=folds, metric=metric, workers=workers,
                                          progress=_progress(bar, "out-of-sample check"), cluster=cluster)
    src = source.run_source(sessions)
    name = f"out-of-sample check, {folds} fold{'s' if folds > 1 else ''}, {sessions[0]} … {sessions[-1]}"
    oos = [f["out_of_sample"]["metrics"] for f in result["folds"]]
    run_id = _save(db_path, lambda w: runs.save_run(w, name=name, kind="walk_forward", source=src,
                                                    params={"grid": grid, "folds": folds, "metric": metric,
                                                            **universe_set},
                                                    metrics=oos[-1] if oos else {}, detail=result,
                                                    created_at=datetime.now(UTC)))
    return {**result, "id": run_id}


# ---------------------------------------------------------------- saved runs
def run_label(saved: pd.DataFrame, run_id: int) -> str:
    row = saved[saved["id"] == run_id].iloc[0]
    return f"#{run_id} {row['name']}"


def saved_table(saved: pd.DataFrame) -> pd.DataFrame:
    """The saved-runs list as shown: times to the minute in UTC, as the run's caption says."""
    out = saved.copy()
    out["created_at"] = pd.to_datetime(out["created_at"], utc=True, format="ISO8601").dt.strftime("%Y-%m-%d %H:%M UTC")
    return out


# ---------------------------------------------------------------- figures without a value
# A table cell without a value says why: an annualised figure (CAGR, Sharpe, Sortino) over fewer than
# figures.MIN_ANNUALISED_SESSIONS sessions "n/a (needs ≥ 20 sessions)", anything else "–" (display.missing_text).
# The browser shows a null cell as "None" whatever a Styler says, so the text is the cell's value: a run's table
# (rows of unlike figures: rates, counts, dollars) is shown as text; tables sorted by a figure (a sweep, the
# saved runs) keep their numbers and get the text only in a column that has no number at all.
def number_text(v: Any) -> str:
    """A figure as text: integers with separators, other numbers to 6 significant digits (2 decimals from 1,000
    up), no value "–"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    f = float(v)
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:,.2f}" if abs(f) >= 1000 else f"{f:.6g}"


def text_table(df: pd.DataFrame, sessions: dict[str, int | None]) -> pd.DataFrame:
    """A table with the metrics as rows (named in its ``metric`` column) as text, every missing figure spelled
    out. ``sessions``: column -> the sessions its figures cover (a column not given: unknown); a ``delta``
    column is a plain difference ("–" when either side has none)."""
    out = df.astype(object).copy()
    for col in [c for c in df.columns if c != "metric"]:
        n = sessions.get(col)
        out[col] = [figure_text(m, v) or number_text(v) if not _missing(v) else NA if col == "delta"
                    else missing_text(m, n) for m, v in zip(df["metric"], df[col], strict=True)]
    return out


def percent_columns(df: pd.DataFrame) -> dict[str, Any]:
    """``column_config`` showing a table's fraction columns (returns, rates, drawdowns) as percentages, as the
    other pages do, while the cells stay numbers (the table sorts by them)."""
    return {c: st.column_config.NumberColumn(c, format="percent") for c in df.columns
            if c in PERCENT_FIGURES and pd.api.types.is_numeric_dtype(df[c])}  # a column of "n/a" text stays text


def sweep_table(df: pd.DataFrame, sessions: int | None) -> pd.DataFrame:
    """A sweep's rows for display: numbers stay numbers (the table is sorted by them); an annualised column
    without any value (a sweep under 20 sessions) says so in every cell. Other missing cells: ``placeholder``."""
    out = df.copy()
    for col in [c for c in df.columns if c in ANNUALISED]:
        if all(_missing(v) for v in df[col]):
            out[col] = missing_text(col, sessions)
    return out


def saved_list(table: pd.DataFrame) -> pd.DataFrame:
    """The saved-runs list for display: a replay without a Sharpe is under the n/a rule; a sweep or an
    out-of-sample check has no run-wide figures at all ("–"). Text cells are ``csv_safe``: the browser's CSV
    download of the table writes them as shown."""
    out = table.copy()
    for col in [c for c in table.columns if c in ANNUALISED]:
        out[col] = [number_text(v) if not _missing(v) else missing_text(col) if kind == "replay" else NA
                    for v, kind in zip(table[col], table.get("kind", [None] * len(table)), strict=True)]
    return csv_safe(out)  # the table's own CSV download: a run named =HYPERLINK(…) is text in a spreadsheet


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _metrics_table(run: dict[str, Any]) -> pd.DataFrame:
    cols = {run["name"]: run["metrics"]}
    for b in (run.get("benchmark") or {}).values():
        cols[b["label"]] = b["metrics"]
    rows = []
    for m in METRICS:
        if any(m in v for v in cols.values()):
            rows.append({"metric": m, **{k: v.get(m) for k, v in cols.items()}})
    return pd.DataFrame(rows)


def _curves(run: dict[str, Any], *, with_benchmark: bool) -> list[tuple[str, pd.DataFrame, str | None]]:
    out = []
    eq = run.get("equity")
    if isinstance(eq, pd.DataFrame) and not eq.empty:
        out.append((f"#{run['id']} {_svg_text(run['name'])}", eq, None))
    if with_benchmark:
        for b in (run.get("benchmark") or {}).values():
            out.append((b["label"], b["curve"], "dot"))
    return out


def _svg_text(text: str) -> str:
    """A run's name in a plotly legend: plotly reads <a href>, <b> and entities in text; shown as typed instead."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sessions(run: dict[str, Any]) -> int | None:
    n = (run.get("source") or {}).get("sessions")
    return int(n) if isinstance(n, int | float) else None


def show_runs(opened: list[dict[str, Any]]) -> None:
    """Open saved runs: one replay with its benchmark, two side by side, a sweep's grid or an out-of-sample check."""
    for r in [r for r in opened if r["kind"] != "replay"]:
        if r["kind"] == "sweep":
            show_sweep({"id": r["id"], "rows": r["detail"]["grid"], "used": _source_text(r), "sessions": _sessions(r),
                        "params": list((r["params"] or {}).get("grid") or {}),
                        "refused": r["detail"].get("refused"), "where": r["detail"].get("where"),
                        "overfitting": r["detail"].get("overfitting")},
                       st.session_state.get("s_metric", METRICS[0]), key=f"saved_{r['id']}")
        elif r["kind"] == "search":
            from ui import search_view

            search_view.show_search({**r["detail"], "id": r["id"], "used": _source_text(r)}, key=f"saved_{r['id']}")
        else:
            show_walk_forward({**r["detail"], "id": r["id"]}, key=f"saved_{r['id']}")
    opened = [r for r in opened if r["kind"] == "replay"]
    if not opened:
        return
    for r in opened:
        src = r["source"]
        st.caption(f"#{r['id']} “{plain(r['name'])}” ({r['kind']}, saved {r['created_at']:%Y-%m-%d %H:%M} UTC): "
                   f"{plain(src.get('description', src.get('kind')))}, {src.get('first')} … {src.get('last')} "
                   f"({src.get('sessions')} sessions), data fingerprint {plain(src.get('fingerprint', '–'))}; "
                   f"parameters {plain(_params_text(r['params']))}")
    if len(opened) == 1:
        one = opened[0]
        table = _metrics_table(one)
        st.dataframe(csv_safe(text_table(table, dict.fromkeys(table.columns, _sessions(one)))), hide_index=True,
                     key="r_metrics")  # csv_safe: the table's own CSV download (a column is the run's name)
        curves = _curves(one, with_benchmark=True)
    else:
        a, b = opened[1], opened[0]  # the older first: delta = newer - older
        table = runs.compare_runs(a, b, METRICS)
        for bench in (b.get("benchmark") or {}).values():  # the newer run's data: doing nothing on the same bars
            table[bench["label"]] = [bench["metrics"].get(m) for m in table["metric"]]
        # compare_runs names the two columns after the runs (with their ids when the names are equal)
        covered = {**dict.fromkeys(table.columns, _sessions(b)), table.columns[1]: _sessions(a)}  # benchmarks: b's
        st.dataframe(csv_safe(text_table(table, covered)), hide_index=True, key="r_compare")
        same_data = a["source"].get("fingerprint") == b["source"].get("fingerprint")
        curves = _curves(a, with_benchmark=same_data) + _curves(b, with_benchmark=True)
        if not same_data:
            st.info("The two runs replayed different bars (their data fingerprints differ): each has its own "
                    "benchmark.")
    st.plotly_chart(charts.equity_overlay(curves), theme=None, key="r_equity")
    from ui.prices import run_price_chart  # the candles of the newest opened run, with its fills

    run_price_chart(opened[0])
    trades = opened[0].get("trades")
    if isinstance(trades, pd.DataFrame) and not trades.empty:
        st.caption(f"Trades of #{opened[0]['id']} ({len(trades)}), New York time like the charts (the Trades CSV "
                   "has UTC and New York time)")
        st.dataframe(csv_safe(views.ny_wall_times(trades, ("entry_ts", "exit_ts"))), hide_index=True,
                     key="r_trades")


def _source_text(r: dict[str, Any]) -> str:
    src = r["source"]
    return (f"{plain(src.get('description', src.get('kind')))}, {src.get('first')} … {src.get('last')} "
            f"({plural(src.get('sessions') or 0, 'session')})")


def _params_text(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("baskets_json",)}
    return ", ".join(f"{k}={plain_number(v)}" for k, v in shown.items())


def manage_run(db_path: str, run: dict[str, Any]) -> None:
    c = st.columns([2.4, 1, 1, 1.3, 1.3, 1.2])  # "Trades CSV" whole at 1280 px
    new = c[0].text_input(f"Rename #{run['id']}", run["name"], key=f"r_rename_{run['id']}", max_chars=80)
    if c[1].button("Rename", key=f"r_rename_go_{run['id']}"):
        try:
            _save(db_path, lambda w: (runs.rename_run(w, run["id"], new), run["id"])[1])
            st.rerun()
        except ValueError as e:
            st.error(str(e))
    sure = c[2].checkbox("sure", key=f"r_del_sure_{run['id']}", help="Tick to confirm, then Delete")
    if c[2].button("Delete", key=f"r_del_{run['id']}", disabled=not sure):
        _save(db_path, lambda w: (runs.delete_run(w, run["id"]), run["id"])[1])
        st.rerun()
    c[3].download_button("Trades CSV", runs.run_trades_csv(run), f"run_{run['id']}_trades.csv", "text/csv",
                         key=f"r_dl_trades_{run['id']}")
    c[4].download_button("Equity CSV", runs.run_equity_csv(run), f"run_{run['id']}_equity.csv", "text/csv",
                         key=f"r_dl_equity_{run['id']}")
    c[5].download_button("Run JSON", runs.run_json(run).encode(), f"run_{run['id']}.json", "application/json",
                         key=f"r_dl_json_{run['id']}")


def live_changes(run: dict[str, Any]) -> dict[str, Any] | None:
    """The live settings a replay run's parameters stand for (its cutoff delta and cooldown), or None when the
    run has no such pair (a sweep or an out-of-sample check holds a grid, not one setting)."""
    params = run.get("params") or {}
    if run.get("kind") != "replay" or "cutoff_delta" not in params or "mixer_cooldown_s" not in params:
        return None
    return {"cutoff_delta": round(float(params["cutoff_delta"]), 4), "cooldown_s": int(params["mixer_cooldown_s"])}


def apply_to_live(ctx: AppContext, run: dict[str, Any], live: dict[str, Any]) -> None:
    """"Apply to live": after a confirmation, the run's cutoff delta and cooldown become the live settings, sent
    as one command the engine audits with source ``research`` (and who sent it)."""
    changes = live_changes(run)
    done = st.session_state.pop("_r_applied", None)
    if done is not None:
        (st.error if done[0] == "failed" else st.success)(done[1])
    if changes is None:
        return
    rid = run["id"]
    if st.button("Apply to live…", key=f"r_apply_{rid}",
                 help="Use this run's cutoff delta and cooldown in live trading (asks first; audited)"):
        st.session_state["_r_apply"] = rid
    if st.session_state.get("_r_apply") != rid:
        return
    old_delta, old_cool = float(live.get("cutoff_delta", 0.0)), int(live.get("cooldown_s", 180))
    confirm_live_change(
        ctx, changes, asking="_r_apply", answer="_r_applied", yes=f"r_apply_yes_{rid}", no=f"r_apply_no_{rid}",
        question=f"Apply run #{rid} to live trading? Cutoff delta {old_delta:+.2f} → {changes['cutoff_delta']:+.2f}, "
                 f"cooldown {old_cool} s → {changes['cooldown_s']} s. The engine uses them from its next tick.",
        done=lambda queued: f"Run #{rid} applied to live{queued}: cutoff delta {changes['cutoff_delta']:+.2f}, "
                            f"cooldown {changes['cooldown_s']} s")


def confirm_live_change(ctx: AppContext, changes: dict[str, Any], *, asking: str, answer: str, yes: str, no: str,
                        question: str, done: Any) -> None:
    """The confirmation of an "Apply to live" (a saved replay's, a search's): ``question`` with Confirm and Cancel.
    Confirm sends ``changes`` as one ``set_params`` command the engine audits with source ``research``; the answer
    (``done(queued)`` or the refusal) is kept under ``answer`` for the page's next run. ``asking``: the session key
    that holds the confirmation open."""
    st.warning(question)
    c = st.columns([1, 1, 4])
    if c[0].button("Confirm", key=yes, type="primary"):
        st.session_state.pop(asking, None)
        res = send_command(ctx, "set_params", {**changes, "_source": "research"})
        if res.get("status") == "failed":
            st.session_state[answer] = ("failed", f"Live settings not changed: {res.get('result')}")
        else:
            st.session_state[answer] = ("done", done(" (queued for the engine's next tick)"
                                                     if res.get("status") == "new" else ""))
        st.rerun()
    if c[1].button("Cancel", key=no):
        st.session_state.pop(asking, None)
        st.rerun()


# ---------------------------------------------------------------- sweeps and out-of-sample
def show_sweep(sweep: dict[str, Any], metric: str, *, key: str = "s") -> None:
    df = pd.DataFrame(sweep["rows"])
    st.caption(f"Sweep #{sweep['id']}: {sweep['used']}" + (f", run {sweep['where']}" if sweep.get("where") else ""))
    show_refused(sweep.get("refused") or [], key=key)
    if sweep.get("overfitting"):
        from ui import search_view

        odds = sweep["overfitting"]
        best = sweep["rows"][odds["chosen"]] if "chosen" in odds else {}
        chosen = ", ".join(f"{k}={plain_number(best[k])}" for k in sweep_params(sweep, df) if k in best)
        search_view.show_odds(odds, key=f"{key}_odds",
                              chosen=f"Best cell by {odds.get('metric', 'total_return')}: {chosen}. " if chosen else "")
    if metric not in df:
        st.info(f"No {metric} in these results.")
        return
    n = sweep.get("sessions")
    if df[metric].isna().all():  # nothing to colour: say why instead of drawing an empty or made-up map
        st.info(f"{metric}: {missing_text(metric, n)} in every cell"
                + (f" (this sweep replayed {n} session{'' if n == 1 else 's'})" if n is not None else "")
                + ". Choose another figure for the heat map.")
    else:
        sweep_heatmap(df, sweep_params(sweep, df), metric, key=key)
    table = sweep_table(df, n)
    st.dataframe(table, hide_index=True, key=f"{key}_table", placeholder=NA,
                 column_config=percent_columns(table))
    st.download_button("Download sweep (CSV)", to_csv_bytes(df), f"sweep_{sweep['id']}.csv",
                       "text/csv", key=f"{key}_dl")


OOS_METRICS = ["return_per_session", *METRICS]  # the figure the out-of-sample verdict compares comes first
COMPARED = ("The parts have different lengths, so they are compared per session: the warning below a fold compares "
            "its return per session (the compound mean of a session) and, where both parts have "
            f"≥ {MIN_ANNUALISED_SESSIONS} sessions, its annualised Sharpe, never total return against total return.")


def show_walk_forward(result: dict[str, Any], *, key: str = "s") -> None:
    st.caption(f"Out-of-sample check #{result['id']}: best cell by {result['metric']} on each in-sample part, "
               f"replayed on the out-of-sample part that follows it")
    for i, f in enumerate(result["folds"], start=1):
        ins, oos = f["in_sample"], f["out_of_sample"]
        best = ", ".join(f"{k}={plain_number(v)}" for k, v in ins["best"].items()) if ins.get("best") else "none"
        st.markdown(f"**Fold {i}**: in-sample {ins['first']} … {ins['last']} ({plural(ins['sessions'], 'session')}), "
                    f"out-of-sample {oos['first']} … {oos['last']} ({plural(oos['sessions'], 'session')}); "
                    f"best cell {best}")
        # a check saved before the return per session was kept: computed from its total return here
        is_m = walkforward.with_per_session(ins.get("metrics") or {}, ins["sessions"]) if ins.get("metrics") else {}
        oos_m = walkforward.with_per_session(oos.get("metrics") or {}, oos["sessions"]) if oos.get("metrics") else {}
        rows = [{"metric": m, "in-sample": is_m.get(m), "out-of-sample": oos_m.get(m)} for m in OOS_METRICS
                if m in is_m or m in oos_m]  # an annualised figure stays, as n/a, when a part is too short
        if rows:
            st.dataframe(text_table(pd.DataFrame(rows), {"in-sample": ins["sessions"],
                                                         "out-of-sample": oos["sessions"]}),
                         hide_index=True, key=f"{key}_oos_{i}")
            st.caption(COMPARED)
        for w in f.get("warnings", []):
            st.warning(w)


# ---------------------------------------------------------------- sweeps on a Dask cluster, grids past two settings
CLUSTER_TTL_S = 30.0  # how long the page trusts what it last heard from the scheduler (a check may take seconds)
CLUSTER_DOWN_TTL_S = 300.0  # an unreachable one costs its whole timeout per check: asked again less often (or now)
# a heat map cell folding other parameters shows their best value: the lowest for these, the highest otherwise
LOWER_IS_BETTER = {"max_drawdown", "max_drawdown_duration_s", "stop_outs", "stop_out_rate", "flip_flops",
                   "flip_flop_rate", "llm_calls", "llm_spend"}
FOLDS = {"best": "the best value over", "mean": "the mean over"}


def sweep_where(settings: Settings) -> cluster.ClusterStatus | None:
    """None without DASK_SCHEDULER (sweeps run here); else the cluster's workers, or why it cannot be used,
    asked at most every ``CLUSTER_TTL_S`` per browser session (an unreachable scheduler costs its timeout)."""
    address = settings.dask_scheduler
    if not address:
        return None
    cached = st.session_state.get("_s_cluster")
    if cached is not None and cached[0] == address and \
            time.monotonic() - cached[1] < (CLUSTER_DOWN_TTL_S if cached[2].error else CLUSTER_TTL_S):
        return cached[2]
    status = cluster.cluster_status(address, settings.dask_connect_timeout_s)
    st.session_state["_s_cluster"] = (address, time.monotonic(), status)
    return status


def recheck_cluster() -> None:
    """Forget what the scheduler last said: the next render asks it again."""
    st.session_state.pop("_s_cluster", None)


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    try:
        yield
    except cluster.ClusterError:
        st.session_state.pop("_s_cluster", None)  # ask again: the page then says what the scheduler says now
        raise


def sweep_grid(grid: dict[str, list], more: str) -> dict[str, list]:
    """The page's cutoff delta × cooldown grid plus the parameters typed one per line (``NAME=start:stop:step`` or
    ``NAME=v1,v2``, as ``--sweep``); a parameter already in the grid is refused, naming it."""
    extra = replay_mod.parse_sweep([ln.strip() for ln in more.splitlines() if ln.strip()])
    twice = [n for n in extra if n in grid]
    if twice:
        raise ValueError(f"{', '.join(twice)} is already swept by the controls above: remove its line")
    return {**grid, **extra}


def _sweep_progress(bar: Any, label: str) -> Any:
    clock = replay_mod.SweepClock()

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {clock.text(done, total)}")
        note_progress(done, total)
    return progress


def sweep_params(sweep: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """The swept settings of a sweep's rows (older saved sweeps do not list them: the columns that are settings)."""
    names = sweep.get("params") or [c for c in df.columns if c in Settings.model_fields]
    return [n for n in names if n in df.columns]


def sweep_heatmap(df: pd.DataFrame, params: list[str], metric: str, *, key: str) -> None:
    """The heat map of two swept settings; with more, two selectboxes choose the axes and each cell folds the
    other parameters (their best or mean value), as the title says."""
    if sorted(params) == ["cutoff_delta", "mixer_cooldown_s"]:  # the page's own grid: as it always was drawn
        pivot = df.pivot(index="mixer_cooldown_s", columns="cutoff_delta", values=metric)
        st.plotly_chart(charts.sweep_heatmap(pivot, metric), theme=None, key=f"{key}_heatmap")
        return
    if len(params) < 2:
        x = params[0] if params else None
        if x is None:
            return
        pivot = df.assign(_all="all").pivot_table(index="_all", columns=x, values=metric, aggfunc="mean")
        st.plotly_chart(charts.sweep_heatmap_axes(pivot, metric, x, ""), theme=None, key=f"{key}_heatmap")
        return
    c = st.columns(3)
    x = c[0].selectbox("Heat map across", params, index=params.index("cutoff_delta") if "cutoff_delta" in params
                       else 0, key=f"{key}_x")
    ys = [p for p in params if p != x]
    y = c[1].selectbox("Heat map down", ys, index=ys.index("mixer_cooldown_s") if "mixer_cooldown_s" in ys else 0,
                       key=f"{key}_y")
    rest = [p for p in params if p not in (x, y)]
    note = ""
    agg: Any = "mean"
    if rest:
        fold = c[2].selectbox("Other parameters", list(FOLDS), key=f"{key}_fold",
                              help="Each heat map cell stands for every value of the other parameters: their best "
                                   "(highest, or lowest for drawdowns and rates of bad events) or their mean")
        agg = ("min" if metric in LOWER_IS_BETTER else "max") if fold == "best" else "mean"
        note = f"{FOLDS[fold]} {', '.join(rest)}"
        st.caption(f"Each cell: {note}; the table below has every cell.")
    pivot = df.pivot_table(index=y, columns=x, values=metric, aggfunc=agg, dropna=False)
    st.plotly_chart(charts.sweep_heatmap_axes(pivot, metric, x, y, note), theme=None, key=f"{key}_heatmap")


def show_refused(refused: list[dict[str, Any]], *, key: str) -> None:
    """Cells a rule between settings refused: listed with the rule's words, never run."""
    if not refused:
        return
    st.warning(f"{len(refused)} cell{'s' if len(refused) != 1 else ''} refused by a settings rule (not run): "
               f"{refused[0]['refused']}" + (" …" if len({r['refused'] for r in refused}) > 1 else ""))
    with st.expander(f"The refused cell{'s' if len(refused) != 1 else ''}"):
        st.dataframe(pd.DataFrame(refused), hide_index=True, key=f"{key}_refused")
