"""The replay CLI and restarts on the same database."""

import json
import subprocess
import sys
from datetime import date, datetime

import pytest

from core.config import load_settings
from core.engine import Engine
from core.research.__main__ import main
from core.research.replay import run_replay
from core.state.store import Store
from core.venues.sim.synthetic import SyntheticMarket

START = date(2025, 3, 3)


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def strip_elapsed(text):
    d = json.loads(text)
    d.pop("elapsed_s")
    return d


def test_same_seed_same_json_and_another_seed_differs(capsys):
    code, a, _ = run_cli(capsys, "--days", "2", "--seed", "3", "--auto", "--json")
    assert code == 0
    _, b, _ = run_cli(capsys, "--days", "2", "--seed", "3", "--auto", "--json")
    _, c, _ = run_cli(capsys, "--days", "2", "--seed", "4", "--auto", "--json")
    da, db, dc = strip_elapsed(a), strip_elapsed(b), strip_elapsed(c)
    assert json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)
    assert da != dc
    expected = {"bars", "signals", "suppressed", "actionable", "intents", "orders", "fills", "trades", "pnl_total",
                "max_drawdown", "win_rate"}
    assert expected <= set(da)
    assert da["bars"] == 2 * 390 * 13
    assert da["signals"] == sum(da["suppressed"].values()) + da["actionable"]
    assert da["orders"] >= da["trades"] > 0 and da["fills"] >= da["trades"]
    # the two P&Ls are named apart: no bare "pnl" at either level
    assert "pnl" not in da and "pnl" not in da["metrics"]
    assert da["metrics"]["pnl_total"] == da["pnl_total"] and "pnl_realized" in da["metrics"]


def test_pnl_total_is_the_equity_change_and_pnl_realized_the_closed_trades():
    s = load_settings(auto_mode=True)
    res = run_replay(s, days=1, seed=4, start=START)  # a day that ends holding positions
    st = res.store
    last = st.scalar("SELECT equity FROM equity ORDER BY ts DESC LIMIT 1")
    realized = st.scalar("SELECT SUM(pnl) FROM trades")
    held = st.scalar("SELECT COUNT(*) FROM positions WHERE qty > 0")
    m = res.stats["metrics"]
    assert res.stats["pnl_total"] == round(last - s.sim_start_cash, 2) == m["pnl_total"]
    assert m["pnl_realized"] == pytest.approx(realized)
    # positions still open at the end make the two differ (marked to market in one, not yet closed in the other)
    assert held > 0 and m["pnl_total"] != pytest.approx(m["pnl_realized"], abs=0.01)
    st.close()


def test_manual_replay_approves_nothing_and_reports_expired(capsys):
    code, out, _ = run_cli(capsys, "--days", "1", "--seed", "3", "--json")
    d = json.loads(out)
    assert code == 0 and d["orders"] == 0 and d["fills"] == 0 and d["intents"] > 0
    assert d["intents_expired"] + d["intents_pending"] == d["intents"]


def test_settings_overrides_change_the_result(capsys):
    _, base, _ = run_cli(capsys, "--days", "1", "--seed", "5", "--json", "--auto")
    _, loose, _ = run_cli(capsys, "--days", "1", "--seed", "5", "--json", "--auto", "--set", "CUTOFF_DELTA=-0.05",
                          "--set", "MIXER_COOLDOWN_S=60")
    b, lo = json.loads(base), json.loads(loose)
    assert lo["suppressed"]["below_cutoff"] < b["suppressed"]["below_cutoff"]
    assert lo["signals"] == b["signals"] and lo != b


def test_bad_set_value_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "--days", "1", "--set", "TIER_A_TOKENS=6  # Tier A", "--json")
    assert code == 2 and "TIER_A_TOKENS" in err and "Traceback" not in err


def test_bars_file_replay_and_bad_file(tmp_path, capsys):
    frame = SyntheticMarket(9, anchor=START).frame_for_sessions(1)
    good = tmp_path / "bars.csv"
    frame.to_csv(good, index=False)
    code, out, _ = run_cli(capsys, "--bars", str(good), "--days", "1", "--auto", "--json", "--start", "2025-03-03")
    assert code == 0 and json.loads(out)["bars"] == len(frame)
    bad = tmp_path / "bad.csv"
    lines = good.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[2], "-1", 1)  # open column of data row 5 (file line 6)
    bad.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(capsys, "--bars", str(bad), "--days", "1", "--json")
    assert code == 2 and "bad.csv line 6" in err and "open" in err


@pytest.mark.parametrize("stop_after", [150, 400])  # each stops with live locks (400: a losing exit's among them)
def test_restart_mid_day_duplicates_nothing(tmp_path, stop_after):
    s = load_settings(auto_mode=True)
    ref = run_replay(s, days=2, seed=21, start=START, db_path=str(tmp_path / "ref.db"))
    db = str(tmp_path / "restart.db")
    first = run_replay(s, days=2, seed=21, start=START, db_path=db, stop_after_ticks=stop_after)
    held_before = {r["symbol"]: r["qty"] for r in first.store.query("SELECT symbol, qty FROM positions")}
    cursor = datetime.fromisoformat(first.store.get_meta("replay_cursor"))
    live_locks = {k for k in first.engine.kv.keys("", cursor)}
    first.store.close()
    # a new engine on the same database starts with the same positions and live locks
    reopened = Engine(s, Store(db), SyntheticMarket(21, anchor=START))
    assert {r["symbol"]: r["qty"] for r in reopened.store.query("SELECT symbol, qty FROM positions")} == held_before
    assert set(reopened.kv.keys("", cursor)) == live_locks and live_locks
    reopened.store.close()
    second = run_replay(s, days=2, seed=21, start=START, db_path=db)
    st = second.store
    for table, key in (("intents", "id"), ("orders", "client_order_id"), ("fills", "id")):
        rows = [r[key] for r in st.query(f"SELECT {key} FROM {table}")]
        assert len(rows) == len(set(rows))
    # the broker saw each client order id once, and the outcome equals an uninterrupted run
    assert st.scalar("SELECT COUNT(*) FROM sim_orders") == st.scalar(
        "SELECT COUNT(DISTINCT client_order_id) FROM sim_orders")
    assert second.stats["orders"] == ref.stats["orders"]
    assert second.stats["fills"] == ref.stats["fills"]
    assert second.stats["pnl_total"] == pytest.approx(ref.stats["pnl_total"], abs=0.01)


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "core.research", "--days", "1", "--seed", "2", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)["bars"] == 390 * 13


def test_sweep_cli_prints_the_grid_as_json():
    out = subprocess.run([sys.executable, "-m", "core.research", "--days", "1", "--seed", "3", "--auto", "--sweep",
                          "cutoff_delta=-0.05:0.0:0.05", "cooldown=120", "--workers", "2"],
                         capture_output=True, text=True, timeout=300, check=True)
    d = json.loads(out.stdout)
    assert d["params"] == ["cutoff_delta", "mixer_cooldown_s"]
    assert [(r["cutoff_delta"], r["mixer_cooldown_s"]) for r in d["grid"]] == [(-0.05, 120), (0.0, 120)]
    # each cell is the same replay the plain CLI runs
    single = subprocess.run([sys.executable, "-m", "core.research", "--days", "1", "--seed", "3", "--auto", "--json",
                             "--set", "CUTOFF_DELTA=-0.05", "--set", "MIXER_COOLDOWN_S=120"],
                            capture_output=True, text=True, timeout=120, check=True)
    assert d["grid"][0]["trades"] == json.loads(single.stdout)["trades"]
    assert d["grid"][0]["pnl_total"] == json.loads(single.stdout)["pnl_total"]
    bad = subprocess.run([sys.executable, "-m", "core.research", "--days", "1", "--sweep", "cutoff_delta=0.6:0.7:0.1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "CUTOFF_DELTA=0.6" in bad.stderr
