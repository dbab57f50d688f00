"""Command line replay: ``python -m core.research --days N --seed S --json`` (also ``python -m core.replay``).

Runs the engine over N trading days (or every session of ``--start``..``--end``) of synthetic (or file, or
Alpaca) bars with a SimClock and prints one JSON object. Same seed and settings give the same JSON apart from
``elapsed_s``. ``--sweep`` prints a grid with the odds that its best cell is luck (PBO and deflated Sharpe,
``core.research.overfitting``); ``--sweep ... --walk-forward K`` chooses the best cell in-sample and judges it
out-of-sample (``core.research.walkforward``); ``--search N --space NAME=LOW:HIGH[:log|int] ...`` adds N Optuna
trials to a study kept in the app's database (``core.research.search``), continued by running it again.
A range is resolved by the Research page's function
(``core.research.ranges``: ``--end`` by ``resolve_range``, ``--days`` by ``resolve_days`` over the range its
sessions span) against today's date: notes about moved dates go to stderr, refusals are ``error: ...`` with exit
code 2; more than ``ranges.MAX_SESSIONS`` sessions (five years) is refused as on the page. Every argument error
names its option; ``--set`` and ``--sweep`` take a setting's name (any case) or an alias of
``core.config.SETTING_ALIASES``, and refuse any other name with the nearest real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from typing import Any

from core.clock import WallClock, trading_date
from core.config import ConfigError, Settings, check_scheduler_address, load_settings, setting_name
from core.research import record, runs
from core.research.cluster import ClusterError
from core.research.ranges import RangeError, resolve_days, resolve_range
from core.research.replay import SweepClock, build_market, parse_sweep, replay_days, run_replay, run_sweep
from core.research.runs import clean_name
from core.research.search import SearchProgress, check_metric, parse_space, run_search, sweep_odds
from core.research.sources import DataSource
from core.research.walkforward import walk_forward
from core.state.decisions import MODES, SUMMARY
from core.state.store import Store
from core.venues.marketdata import BarDataError
from core.venues.sim.bar_files import ReplayMarket, load_bars


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as {setting: value}; KEY is a setting's name in any case or one of the names
    ``--sweep`` accepts (``cooldown``); any other KEY is refused naming the nearest real names."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            name = setting_name(k, aliases=True)
        except ConfigError as e:
            raise ConfigError(f"--set {item}: {e}") from None
        if name in out:
            raise ConfigError(f"--set {item}: {name.upper()} is already set by an earlier --set")
        out[name] = v
    return out


def cli_source(args: argparse.Namespace, settings: Settings) -> DataSource:
    if args.bars:
        return DataSource("file", file_name=os.path.basename(args.bars))
    if settings.market_data == "alpaca":
        return DataSource("alpaca", feed=settings.alpaca_feed)
    return DataSource("synthetic", seed=args.seed)


def with_app_store(settings: Settings, write: Callable[[Store], int]) -> int:
    """Write to the app's database (DB_PATH), where the Research page reads saved runs."""
    store = Store(settings.db_path)
    try:
        return int(write(store))
    finally:
        store.close()


def save_other(settings: Settings, name: str | None, kind: str, source: DataSource, sessions: list[date],
               params: dict[str, Any], metrics: dict[str, Any], detail: dict[str, Any]) -> dict[str, int]:
    """A sweep or a walk-forward kept as a saved run (``--save NAME``); nothing when no name was given."""
    if name is None:
        return {}
    src = source.run_source(sessions)
    return {"saved_run_id": with_app_store(settings, lambda w: runs.save_run(
        w, name=name, kind=kind, source=src, params=params, metrics=metrics, detail=detail,
        created_at=WallClock().now()))}


def sweep_cluster(arg: str | None, settings: Settings) -> str | None:
    """The Dask scheduler a sweep runs on: --cluster, else DASK_SCHEDULER; None (``--cluster local``): here."""
    if arg is not None and arg.strip().lower() == "local":
        return None
    if arg is not None:
        try:
            return check_scheduler_address(arg)
        except ValueError as e:
            raise ValueError(f"--cluster {arg!r}: {e}") from None
    return settings.dask_scheduler


def where_text(cluster: str | None, workers: int) -> str:
    return f"Dask cluster {cluster}" if cluster else f"here, {workers} process{'es' if workers != 1 else ''}"


def cli_progress(label: str, unit: str = "cells") -> Callable[[int, int], None]:
    """Sweep progress on stderr, one line per finished cell: done / total, elapsed, estimated time left."""
    clock, last = SweepClock(), [-1]

    def progress(done: int, total: int) -> None:
        if done != last[0]:  # called every heartbeat too: print when a cell ends (and once at the start)
            last[0] = done
            print(f"{label}: {clock.text(done, total, unit)}", file=sys.stderr, flush=True)

    return progress


def search_progress(label: str) -> Callable[[SearchProgress], None]:
    """Search progress on stderr, one line per finished trial: done / total, time left, the best so far."""
    last = [-1]

    def progress(p: SearchProgress) -> None:
        if p.done != last[0]:
            last[0] = p.done
            print(f"{label}: {p.text()}", file=sys.stderr, flush=True)

    return progress


def prepare_kernel() -> None:
    """The first run after install compiles the research kernel: say so on stderr, with the time it took."""
    from core.research import warm

    if warm.kernel_ready():
        return
    print("preparing the research engine (first run after install: compiling it takes about a minute) ...",
          file=sys.stderr, flush=True)
    print(f"research engine ready in {warm.warm_up():.0f} s", file=sys.stderr, flush=True)


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (argparse names the option in front of the message)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value
    return parse


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, not {text!r}") from None


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


DEFAULT_START = date(2025, 3, 3)


def _range_words(args: argparse.Namespace, start: date, days: int) -> str:
    """The options a range came from, as typed (an error or a note names them)."""
    return f"--start {start} " + (f"--end {args.end}" if args.end is not None else f"--days {days}")


def _set_error(e: ConfigError, items: list[str]) -> ConfigError:
    """A refused setting that came from --set names that option (the message names the setting)."""
    text = str(e)
    mine = [i for i in items if "=" in i and setting_name(i.split("=", 1)[0], aliases=True).upper() in text]
    return ConfigError(f"--set {' '.join(mine)}: {text}") if mine else e


def replay_session_main(args: argparse.Namespace, today: date | None = None) -> int:
    """``--replay-session DAY [--db DB] [--save NAME] [--json]``: one JSON object (the summary, the first
    divergence, every difference with --json), exit code 0; 2 with ``error: ...`` when it cannot run. An Alpaca
    session's history is fetched with this environment's keys (the journal keeps none); ``today``'s New York date
    says which days are complete."""
    from core.research import session_replay as sr

    try:
        settings = load_settings()
        db = args.db or settings.db_path
        if db != ":memory:" and not os.path.exists(db):
            raise ValueError(f"--db {db}: no such database")
        live = Store(db, readonly=True)
        try:
            result = sr.replay_session(live, args.replay_session, history=settings,
                                       today=today or trading_date(WallClock().now()))
        finally:
            live.close()
        saved = {}
        if args.save is not None:
            name = clean_name(args.save)
            store = Store(db)
            try:
                saved = {"saved_run_id": sr.save_session_run(store, result, name=name, created_at=WallClock().now())}
            finally:
                store.close()
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {k: v for k, v in result.to_dict().items() if args.json or k not in ("differences", "equity_live",
                                                                               "equity_replay")}
    print(json.dumps({**out, **saved}, sort_keys=True, default=str))
    return 0


def main(argv: list[str] | None = None, *, today: date | None = None) -> int:
    """Run the CLI; ``today`` (tests) stands in for the wall-clock date that ranges are checked against."""
    ap = argparse.ArgumentParser(prog="python -m core.research", description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=_whole(1), help="trading sessions to replay from --start (default 5)")
    ap.add_argument("--seed", type=_whole(0), default=7, help="synthetic market seed")
    ap.add_argument("--start", type=_iso_date,
                    help=f"first date (YYYY-MM-DD; default {DEFAULT_START}, with --bars the file's first session)")
    ap.add_argument("--end", type=_iso_date,
                    help="last date (YYYY-MM-DD): replay every session of --start..--end instead of --days")
    ap.add_argument("--strategy", help="package.module:ClassName")
    ap.add_argument("--bars", help="CSV or Parquet bars file instead of the synthetic market")
    ap.add_argument("--auto", action="store_true", help="submit intents directly (AUTO_MODE=1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--db", help="SQLite file (default: a temporary file); a second run resumes it")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--sweep", nargs="+", metavar="NAME=SPEC",
                    help="grid over numeric settings, e.g. cutoff_delta=-0.05:0.05:0.01 cooldown=60,120,180 "
                         "risk_per_trade=0.005,0.01")
    ap.add_argument("--workers", type=_whole(1), default=2, help="processes for --sweep (without a cluster)")
    ap.add_argument("--cluster", metavar="tcp://HOST:PORT",
                    help="run --sweep cells as tasks on this Dask scheduler (default: DASK_SCHEDULER when set); "
                         "'local' runs them here whatever DASK_SCHEDULER says")
    ap.add_argument("--walk-forward", type=_whole(1), metavar="K",
                    help="out-of-sample check of the --sweep grid over K folds (core/research/walkforward.py)")
    ap.add_argument("--in-sample", type=_share, help="share of each fold's sessions used to choose (default 0.7)")
    ap.add_argument("--metric", help="the figure the walk-forward chooses the best cell by, or the search maximises "
                                     "(minimises for drawdowns and rates of bad events; default total_return)")
    ap.add_argument("--search", type=_whole(1), metavar="N",
                    help="add N trials of an Optuna (TPE) search over --space to a study in the app's database "
                         "(DB_PATH); the same command again continues the same study")
    ap.add_argument("--space", nargs="+", metavar="NAME=LOW:HIGH[:log|int]",
                    help="the settings a --search varies, e.g. cutoff_delta=-0.1:0.1 risk_per_trade=0.001:0.02:log "
                         "mixer_cooldown_s=30:600")
    ap.add_argument("--study", metavar="NAME",
                    help="the study a --search adds to (default: a name made from the search's inputs)")
    ap.add_argument("--batch", type=_whole(1), default=4,
                    help="trials a --search asks at once (the trials depend on it, not on --workers or --cluster)")
    ap.add_argument("--no-prune", action="store_true",
                    help="replay every --search trial over the whole range (default: a trial clearly behind after "
                         "the first third of the range is pruned)")
    ap.add_argument("--save", metavar="NAME",
                    help="keep the run (replay, sweep or walk-forward) in research_runs of the app's database "
                         "(DB_PATH), where the Research page lists it")
    ap.add_argument("--decisions", choices=list(MODES), default=SUMMARY,
                    help="summary: decisions that never passed the cutoff stored as per-minute counts (same figures, "
                         "smaller and faster); full: one row per decision, as live trading")
    ap.add_argument("--replay-session", type=_iso_date, metavar="YYYY-MM-DD",
                    help="replay the live session of that New York date from the journal of --db (default DB_PATH) "
                         "and compare it with what live did (core/research/session_replay.py)")
    args = ap.parse_args(argv)
    if args.replay_session is not None:
        return replay_session_main(args, today)
    if args.days is not None and args.end is not None:
        ap.error("--days and --end both give the range: use one")
    days = 5 if args.days is None else args.days
    if args.sweep and args.decisions != SUMMARY:
        ap.error("--decisions full is for a single replay: a sweep cell keeps only its metrics")
    if args.walk_forward is not None and not args.sweep:
        ap.error("--walk-forward needs a --sweep grid to choose from")
    if args.search is not None and args.sweep:
        ap.error("--search and --sweep are two ways to choose settings: use one")
    if args.search is not None and not args.space:
        ap.error("--search needs --space NAME=LOW:HIGH[:log|int] (the settings to vary)")
    if args.search is not None and args.decisions != SUMMARY:
        ap.error("--decisions full is for a single replay: a search trial keeps only its metrics")
    for option, given in (("--space", args.space), ("--study", args.study)):
        if given is not None and args.search is None:
            ap.error(f"{option} is for --search, which is not given")
    if args.in_sample is not None and args.walk_forward is None:  # it would be ignored: say so instead
        ap.error("--in-sample is for --walk-forward, which is not given")
    if args.metric is not None and args.walk_forward is None and args.search is None:
        ap.error("--metric is for --walk-forward or --search, neither of which is given")
    in_sample = 0.7 if args.in_sample is None else args.in_sample
    metric = args.metric or "total_return"
    if args.walk_forward is not None:
        from core.research.walkforward import metric_names

        if metric not in metric_names():
            ap.error(f"argument --metric: unknown metric {metric!r}: one of {', '.join(metric_names())}")
    # the one wall-clock read: ranges are checked against today's New York date
    today = today or trading_date(WallClock().now())
    try:
        overrides = parse_set(args.set)
        if args.strategy:
            overrides["strategy"] = args.strategy
        if args.auto:
            overrides["auto_mode"] = "1"
        try:
            settings = load_settings(**overrides)
        except ConfigError as e:
            raise _set_error(e, args.set) from None
        grid = parse_sweep(args.sweep) if args.sweep else {}  # every value within its setting's bounds
        space = parse_space(args.space) if args.search is not None else {}  # refused before anything runs
        cluster = sweep_cluster(args.cluster, settings)
        try:
            market = ReplayMarket(load_bars(args.bars)) if args.bars else None
        except BarDataError as e:
            raise BarDataError(f"--bars {args.bars}: {e}") from None
        start = args.start or (market.sessions[0] if market is not None and market.sessions else DEFAULT_START)
        # the page's function, limit and words: --end resolves [start, end], --days the range its sessions span
        # (a future start, a holiday's move and the limit alike), all before anything is downloaded
        data = market.sessions if market is not None else None
        try:
            if args.end is not None:
                resolved, notes = resolve_range(start, args.end, today=today, data_sessions=data)
            else:
                resolved, notes = resolve_days(start, days, today=today, data_sessions=data)
        except RangeError as e:
            raise RangeError(f"{_range_words(args, start, days)}: {e}") from None
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        start, end = resolved[0], resolved[-1]
        if market is None and settings.market_data == "alpaca":  # downloaded once, for every run below
            market = build_market(settings, seed=args.seed, start=start, bars_file=None, days=days, end=end,
                                  today=today)
        if args.save is not None:
            try:
                clean_name(args.save)  # a bad name is refused before the run, not after it
            except ValueError as e:
                raise ValueError(f"--save: {e}") from None
        source = cli_source(args, settings)
        sessions = replay_days(settings, start, days, market, end)
        if args.search is not None:
            check_metric(metric, len(sessions))
        prepare_kernel()
        if args.search is not None:
            # research runs always submit (nobody approves inside a replay), as the Research page's runs do
            base = {**overrides, "auto_mode": "1"}
            out = run_search(base, space, n_trials=args.search, metric=metric, sessions=sessions, seed=args.seed,
                             db_path=settings.db_path, study_name=args.study, market=market,
                             source=source.as_dict(),
                             batch=args.batch, workers=args.workers, cluster=cluster, prune=not args.no_prune,
                             progress=search_progress(f"search ({where_text(cluster, args.workers)})"))
            saved = save_other(settings, args.save, "search", source, sessions,
                               {"space": [d.text() for d in space.values()], "metric": metric, **overrides},
                               (out["best"] or {}).get("row") or {}, out)
            print(json.dumps({**out, "decisions": SUMMARY, **saved}, sort_keys=True, default=str))
            return 0
        if args.walk_forward is not None:
            wf = walk_forward(overrides, grid, sessions=sessions,
                              seed=args.seed, market=market, folds=args.walk_forward, in_sample=in_sample,
                              metric=metric, workers=args.workers, today=today, cluster=cluster,
                              progress=cli_progress(f"walk-forward ({where_text(cluster, args.workers)})",
                                                    "steps (cells and out-of-sample replays)"))
            saved = save_other(settings, args.save, "walk_forward", source, sessions, {"grid": grid, **overrides},
                               wf["folds"][-1]["out_of_sample"]["metrics"] if wf["folds"] else {}, wf)
            print(json.dumps({**wf, "decisions": SUMMARY, **saved}, sort_keys=True, default=str))
            return 0
        if grid:
            rows = run_sweep(overrides, grid, days=days, seed=args.seed, start=start, end=end, market=market,
                             workers=args.workers, today=today, cluster=cluster,
                             progress=cli_progress(f"sweep ({where_text(cluster, args.workers)})"))
            odds = sweep_odds(rows, rows.returns)  # the best cell by total_return, as a walk-forward chooses
            saved = save_other(settings, args.save, "sweep", source, sessions, {"grid": grid, **overrides}, {},
                               {"grid": list(rows), "refused": rows.refused, "where": rows.where,
                                "returns": rows.returns, "overfitting": odds})
            print(json.dumps({"params": list(grid), "grid": rows, "refused": rows.refused, "where": rows.where,
                              "overfitting": odds, "decisions": SUMMARY, **saved}, sort_keys=True, default=str))
            return 0
        saved = {}
        with tempfile.TemporaryDirectory() as tmp:
            db = args.db or os.path.join(tmp, "replay.db")
            result = run_replay(settings, days=days, seed=args.seed, start=start, end=end, market=market,
                                today=today, db_path=db, decisions=args.decisions)
            try:
                if args.save is not None:
                    rec = record.replay_record(result, settings, source, overrides, sessions)
                    saved = {"saved_run_id": with_app_store(settings, lambda w: record.save_replay(
                        w, args.save, rec, created_at=WallClock().now()))}
            finally:
                result.store.close()
    except (ConfigError, BarDataError, ValueError, ClusterError) as e:  # SearchError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = {**result.stats, "decisions": args.decisions, **saved}
    if args.json:
        print(json.dumps(stats, sort_keys=True))
    else:
        for k, v in stats.items():
            print(f"{k:>16}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
