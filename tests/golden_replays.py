"""Replays whose databases must not change when the code is reshaped without a rule change.

``python tests/golden_replays.py write`` records, per case, a SHA-256 of every table (rows sorted) into
``tests/fixtures/golden_replays.json``; ``tests/test_golden_replays.py`` replays the same cases and compares. A
change that means to alter a result (a rule decision) rewrites the file in the same commit and says which cases
moved and why. ``python tests/golden_replays.py diff`` names the tables that differ and their first differing rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURE = ROOT / "tests" / "fixtures" / "golden_replays.json"

# (name, seed, start, days, decisions, settings overrides): every gate, the baskets, manual expiry, tight risk
CASES: list[tuple[str, int, str, int, str, dict[str, Any]]] = [
    ("auto_default", 7, "2025-03-03", 3, "summary", {"auto_mode": True}),
    ("auto_full_log", 21, "2025-03-03", 2, "full", {"auto_mode": True}),
    ("manual_expiry", 7, "2025-03-10", 2, "full", {"auto_mode": False}),
    ("loose_baskets", 3, "2025-06-02", 3, "summary",
     {"auto_mode": True, "cutoff_delta": -0.08, "mixer_cooldown_s": 60, "basket_mean_score": -0.04,
      "basket_neg_ratio": 0.5, "basket_min_signals": 2, "direction_lock_s": 240}),
    ("tight_risk", 11, "2025-03-03", 3, "full",
     {"auto_mode": True, "cutoff_delta": -0.1, "max_positions": 2, "risk_per_trade": 0.002,
      "max_concurrent_risk": 0.004, "daily_loss_limit": 0.002, "tier_a_daily_cap": 3, "rth_daily_cap": 8,
      "min_position_fraction": 0.6}),
    ("relaxed_profile", 5, "2025-11-26", 3, "summary",
     {"auto_mode": True, "profile": "relaxed", "tier_a_tokens": 2, "reserve_tokens": 1, "stop_loss_pct": 0.004,
      "take_profit_pct": 0.006, "protection_stoploss_count": 2, "sim_fee_per_order": 1.0}),
]


def tables(db: str) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names
                if n != "sqlite_sequence"}
    finally:
        con.close()


def run_case(case: tuple[str, int, str, int, str, dict[str, Any]], folder: str) -> dict[str, list[tuple[Any, ...]]]:
    from core.config import load_settings
    from core.research.replay import run_replay

    name, seed, start, days, decisions, overrides = case
    db = str(Path(folder) / f"{name}.db")
    run_replay(load_settings(**overrides), days=days, seed=seed, start=date.fromisoformat(start), db_path=db,
               decisions=decisions).store.close()
    return tables(db)


def digest(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:24]


def case_digests(case: tuple[str, int, str, int, str, dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        t = run_case(case, tmp)
    return {n: {"rows": len(rows), "sha": digest(rows)} for n, rows in t.items()}


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "check"
    if what == "write":
        out = {c[0]: case_digests(c) for c in CASES}
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE}")
        return 0
    if what == "dump":  # full rows into a folder, for diffing two versions of the code
        folder = Path(argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        for c in CASES:
            with tempfile.TemporaryDirectory() as tmp:
                t = run_case(c, tmp)
            (folder / f"{c[0]}.json").write_text(json.dumps({n: [list(r) for r in rows] for n, rows in t.items()},
                                                            indent=0, default=str))
        return 0
    want = json.loads(FIXTURE.read_text())
    bad = 0
    for c in CASES:
        got = case_digests(c)
        for table in sorted(set(got) | set(want.get(c[0], {}))):
            if got.get(table) != want.get(c[0], {}).get(table):
                bad += 1
                print(f"{c[0]}: {table}: {want.get(c[0], {}).get(table)} -> {got.get(table)}")
    print("all equal" if not bad else f"{bad} tables differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
