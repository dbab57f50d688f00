"""Command line replay: ``python -m core.research --days N --seed S --json``.

Runs the engine over N trading days of synthetic (or file) bars with a
SimClock and prints one JSON object. Same seed and settings give the same
JSON apart from ``elapsed_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date

from core.config import ConfigError, load_settings
from core.research.replay import parse_sweep, run_replay, run_sweep
from core.state.decisions import MODES, SUMMARY
from core.venues.marketdata import BarDataError


def parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip().lower()] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.research", description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=5, help="trading sessions to replay")
    ap.add_argument("--seed", type=int, default=7, help="synthetic market seed")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2025, 3, 3), help="first date (YYYY-MM-DD)")
    ap.add_argument("--strategy", help="package.module:ClassName")
    ap.add_argument("--bars", help="CSV or Parquet bars file instead of the synthetic market")
    ap.add_argument("--auto", action="store_true", help="submit intents directly (AUTO_MODE=1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--db", help="SQLite file (default: a temporary file); a second run resumes it")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--sweep", nargs="+", metavar="NAME=SPEC",
                    help="grid over one or two settings, e.g. cutoff_delta=-0.05:0.05:0.01 cooldown=60,120,180")
    ap.add_argument("--workers", type=int, default=2, help="processes for --sweep")
    ap.add_argument("--decisions", choices=list(MODES), default=SUMMARY,
                    help="summary: decisions that never passed the cutoff stored as per-minute counts (same figures, "
                         "smaller and faster); full: one row per decision, as live trading")
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days must be >= 1")
    if args.sweep and args.decisions != SUMMARY:
        ap.error("--decisions full is for a single replay: a sweep cell keeps only its metrics")
    try:
        overrides = parse_set(args.set)
        if args.strategy:
            overrides["strategy"] = args.strategy
        if args.auto:
            overrides["auto_mode"] = "1"
        settings = load_settings(**overrides)
        if args.sweep:
            grid = parse_sweep(args.sweep)
            for name, values in grid.items():  # every value must be a valid setting before any run starts
                for v in values:
                    load_settings(**{**overrides, name: v})
            rows = run_sweep(overrides, grid, days=args.days, seed=args.seed, start=args.start,
                             bars_file=args.bars, workers=args.workers)
            print(json.dumps({"params": list(grid), "grid": rows, "decisions": SUMMARY}, sort_keys=True, default=str))
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            db = args.db or os.path.join(tmp, "replay.db")
            result = run_replay(settings, days=args.days, seed=args.seed, start=args.start, bars_file=args.bars,
                                db_path=db, decisions=args.decisions)
            result.store.close()
    except (ConfigError, BarDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = {**result.stats, "decisions": args.decisions}
    if args.json:
        print(json.dumps(stats, sort_keys=True))
    else:
        for k, v in stats.items():
            print(f"{k:>16}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
