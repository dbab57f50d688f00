"""`python -m core.research --save NAME` keeps the run in the app's database, where the Research page lists it."""

from __future__ import annotations

import json
from datetime import date

import pytest

from core.research import runs
from core.research.__main__ import main
from core.state.store import Store

TODAY = date(2026, 6, 1)  # the CLI's "today" is fixed: the range is checked against it, not the wall clock


def saved(db) -> list[dict]:  # type: ignore[no-untyped-def]
    store = Store(str(db), readonly=True)
    try:
        return [runs.load_run(store, int(i)) for i in runs.list_runs(store)["id"]]
    finally:
        store.close()


def test_a_saved_replay_is_the_printed_one(tmp_path, monkeypatch, capsys):
    db = tmp_path / "app.db"
    monkeypatch.setenv("DB_PATH", str(db))
    code = main(["--start", "2025-03-03", "--end", "2025-03-04", "--seed", "5", "--auto", "--json",
                 "--set", "cutoff_delta=-0.03", "--save", "  cli run  "], today=TODAY)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    [run] = saved(db)
    assert run["id"] == out["saved_run_id"] and run["name"] == "cli run" and run["kind"] == "replay"
    assert run["source"]["kind"] == "synthetic" and run["source"]["seed"] == 5
    assert (run["source"]["first"], run["source"]["last"], run["source"]["sessions"]) == ("2025-03-03",
                                                                                         "2025-03-04", 2)
    assert run["params"]["cutoff_delta"] == "-0.03"
    assert run["metrics"]["trades"] == out["metrics"]["trades"] and run["metrics"]["pnl_total"] == out["pnl_total"]
    assert len(run["trades"]) == out["metrics"]["trades"]
    assert run["equity"]["equity"].iloc[-1] == pytest.approx(100_000 + out["pnl_total"], abs=0.01)
    assert "equal_weight" in run["benchmark"]


def test_a_saved_sweep_keeps_its_grid_and_a_bad_name_runs_nothing(tmp_path, monkeypatch, capsys):
    db = tmp_path / "app.db"
    monkeypatch.setenv("DB_PATH", str(db))
    code = main(["--days", "1", "--auto", "--sweep", "cutoff_delta=-0.02,0.02", "--workers", "1",
                 "--save", "grid"], today=TODAY)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    [run] = saved(db)
    assert run["kind"] == "sweep" and run["detail"]["grid"] == out["grid"] and len(out["grid"]) == 2
    assert main(["--days", "1", "--save", "   "], today=TODAY) == 2
    assert "name is empty" in capsys.readouterr().err
    assert len(saved(db)) == 1
