"""Research ranges: resolve_range's rules, replays and sweeps over [start, end] on a prepared market, the CLI's
--end and the ``python -m core.replay`` alias."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest

from core.clock import CALENDAR_END, CALENDAR_START, session_bounds
from core.config import load_settings
from core.research.__main__ import main
from core.research.ranges import RangeError, resolve_range
from core.research.replay import cell_row, run_replay, run_sweep
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket

TODAY = date(2026, 11, 30)  # every test passes its own "today": nothing depends on the real date


# ---------------------------------------------------------------- resolve_range
def test_a_weekend_start_moves_forward_and_a_holiday_end_moves_back_with_notes():
    sessions, notes = resolve_range(date(2025, 3, 1), date(2025, 4, 18), today=TODAY)  # Sat .. Good Friday
    assert sessions[0] == date(2025, 3, 3) and sessions[-1] == date(2025, 4, 17)
    # every weekday: 21 in March from the 3rd, 13 in April up to the 17th (no holiday in between)
    assert all(session_bounds(d) is not None for d in sessions) and len(sessions) == 21 + 13
    assert notes == [
        "2025-03-01 is not a trading day (Saturday): the run starts at the next session, 2025-03-03",
        "2025-04-18 is not a trading day (Friday, a market holiday): the run ends at the previous session, "
        "2025-04-17",
    ]
    same, none = resolve_range(date(2025, 3, 3), date(2025, 4, 17), today=TODAY)
    assert same == sessions and none == []


@pytest.mark.parametrize(("start", "end", "today", "message"), [
    (date(2025, 3, 5), date(2025, 3, 4), TODAY, "the end 2025-03-04 is before the start 2025-03-05"),
    (date(2026, 11, 2), date(2030, 6, 3), TODAY, "2030-06-03 is in the future (today is 2026-11-30)"),
    (date(2026, 12, 1), date(2026, 12, 3), TODAY, "2026-12-01 is in the future (today is 2026-11-30)"),
    (date(1989, 12, 1), date(1990, 3, 1), TODAY,
     f"1989-12-01 is outside the exchange calendar ({CALENDAR_START}..{CALENDAR_END})"),
    (date(2035, 12, 1), date(2036, 1, 9), date(2040, 1, 1),
     f"2036-01-09 is outside the exchange calendar ({CALENDAR_START}..{CALENDAR_END})"),
    (date(2025, 3, 8), date(2025, 3, 9), TODAY, "no trading session between 2025-03-08 and 2025-03-09"),
])
def test_ranges_that_cannot_run_are_refused_in_our_words(start, end, today, message):
    with pytest.raises(RangeError) as e:
        resolve_range(start, end, today=today)
    assert str(e.value) == message


def test_a_range_beyond_the_data_is_refused_naming_its_span_and_its_gaps_are_noted():
    data = [date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 6), date(2025, 3, 7)]  # no bars on the 5th
    with pytest.raises(RangeError, match=r"the data covers 2025-03-03\.\.2025-03-07: the range starts at 2025-02-28"):
        resolve_range(date(2025, 2, 28), date(2025, 3, 7), today=TODAY, data_sessions=data)
    with pytest.raises(RangeError, match=r"the data covers 2025-03-03\.\.2025-03-07: the range ends at 2025-03-10"):
        resolve_range(date(2025, 3, 3), date(2025, 3, 10), today=TODAY, data_sessions=data)
    sessions, notes = resolve_range(date(2025, 3, 1), date(2025, 3, 7), today=TODAY, data_sessions=data)
    assert sessions == data
    assert notes[-1] == "the data has no bars on 1 session(s) of the range (2025-03-05): they are skipped"


def test_more_sessions_than_allowed_names_both_numbers():
    with pytest.raises(RangeError, match=r"2025-03-03\.\.2025-03-14 has 10 sessions, more than the 9 a run takes"):
        resolve_range(date(2025, 3, 3), date(2025, 3, 14), today=TODAY, max_sessions=9)
    assert len(resolve_range(date(2025, 3, 3), date(2025, 3, 14), today=TODAY, max_sessions=10)[0]) == 10


def test_one_limit_of_five_years_for_the_page_and_the_cli(capsys):
    """ranges.MAX_SESSIONS is the page's limit (it defines none of its own) and the CLI's, by --end and by
    --days, refused before anything runs with the same words naming both numbers."""
    import ast
    from pathlib import Path

    from core.clock import trading_sessions
    from core.research import ranges

    assert ranges.MAX_SESSIONS == 1260  # five years of sessions
    page = Path(__file__).resolve().parents[1] / "pages" / "research.py"
    names = {n.id for n in ast.walk(ast.parse(page.read_text())) if isinstance(n, ast.Name)}
    assert "MAX_SESSIONS" not in names and "ranges.MAX_SESSIONS" in page.read_text()
    over = trading_sessions(date(2019, 1, 2), ranges.MAX_SESSIONS + 1)
    message = f"2019-01-02..{over[-1]} has 1261 sessions, more than the 1260 a run takes"
    with pytest.raises(RangeError) as e:
        resolve_range(over[0], over[-1], today=TODAY)
    assert str(e.value) == message
    assert len(resolve_range(over[0], over[-2], today=TODAY)[0]) == ranges.MAX_SESSIONS
    for args in (["--end", str(over[-1])], ["--days", "1261"], ["--days", "1261", "--sweep", "cooldown=60,120"]):
        code, out, err = run_cli(capsys, "--start", "2019-01-02", *args)
        # the page's words, after the options they answer
        assert (code, out, err.strip()) == (2, "", f"error: --start 2019-01-02 {' '.join(args[:2])}: {message}"), args


def test_the_cli_limit_holds_in_a_process_of_its_own():
    over = date(2019, 1, 2)
    out = subprocess.run([sys.executable, "-m", "core.research", "--start", str(over), "--days", "1300"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().startswith("error: --start 2019-01-02 --days 1300: 2019-01-02..") and \
        out.stderr.strip().endswith("has 1300 sessions, more than the 1260 a run takes")


def test_session_bounds_is_cached_once():
    assert session_bounds.cache_info().maxsize == 16384
    assert not hasattr(session_bounds.__wrapped__, "cache_info")  # no second cache stacked under it


# ---------------------------------------------------------------- replays over a range
def test_a_range_replays_its_sessions_and_says_which():
    s = load_settings(auto_mode=True)
    by_range = run_replay(s, seed=4, start=date(2025, 3, 1), end=date(2025, 3, 4))  # Sat .. Tue
    by_days = run_replay(s, days=2, seed=4, start=date(2025, 3, 3))
    assert (by_range.stats["first_session"], by_range.stats["last_session"]) == ("2025-03-03", "2025-03-04")
    assert by_range.stats["sessions"] == 2
    for k in ("bars", "orders", "fills", "pnl_total", "metrics", "first_session", "last_session"):
        assert by_range.stats[k] == by_days.stats[k], k


def test_a_prepared_market_replays_its_sessions_inside_the_range_in_process_and_in_workers():
    frame = SyntheticMarket(6, anchor=date(2025, 3, 3)).frame_for_sessions(3)  # Mon .. Wed
    market = ReplayMarket(frame)
    s = load_settings(auto_mode=True)
    res = run_replay(s, seed=0, start=date(2025, 3, 4), end=date(2025, 3, 9), market=market)
    assert (res.stats["first_session"], res.stats["last_session"]) == ("2025-03-04", "2025-03-05")
    assert res.stats["bars"] == int((frame["timestamp"] >= "2025-03-04 14:30Z").sum())
    with pytest.raises(ValueError, match=r"no session in 2025-03-06\.\.2025-03-07 \(they cover 2025-03-03\.\.2025"):
        run_replay(s, seed=0, start=date(2025, 3, 6), end=date(2025, 3, 7), market=market)
    grid = {"cutoff_delta": [-0.05, 0.05]}
    one = run_sweep({"auto_mode": True}, grid, seed=0, start=date(2025, 3, 5), end=date(2025, 3, 5), market=market,
                    workers=1)
    two = run_sweep({"auto_mode": True}, grid, seed=0, start=date(2025, 3, 5), end=date(2025, 3, 5), market=market,
                    workers=2)  # the market reaches the spawned workers with the scored feed
    assert not one.cancelled and not two.cancelled
    assert one == two
    for row, delta in zip(one, grid["cutoff_delta"], strict=True):
        ref = run_replay(load_settings(auto_mode=True, cutoff_delta=delta), seed=0, start=date(2025, 3, 5),
                         end=date(2025, 3, 5), market=market)
        assert row == cell_row({"cutoff_delta": delta}, ref.stats)
    assert one[0] != one[1]  # the cells differ: the comparison above can tell them apart


# ---------------------------------------------------------------- the CLI
def run_cli(capsys, *args: str, today: date = TODAY) -> tuple[int, str, str]:
    code = main(list(args), today=today)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_replays_the_range_and_notes_moved_dates(capsys):
    code, out, err = run_cli(capsys, "--start", "2025-03-01", "--end", "2025-03-03", "--auto", "--json")
    d = json.loads(out)
    assert code == 0 and (d["first_session"], d["last_session"], d["sessions"]) == ("2025-03-03", "2025-03-03", 1)
    assert "note: 2025-03-01 is not a trading day (Saturday)" in err


def test_cli_range_errors_exit_2(capsys, tmp_path):
    code, out, err = run_cli(capsys, "--start", "2026-11-02", "--end", "2030-06-03")
    assert (code, out) == (2, "")
    assert err.strip() == ("error: --start 2026-11-02 --end 2030-06-03: 2030-06-03 is in the future "
                           "(today is 2026-11-30)")
    frame = SyntheticMarket(6, anchor=date(2025, 3, 3)).frame_for_sessions(2)
    path = tmp_path / "bars.csv"
    frame.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "--bars", str(path), "--start", "2025-03-03", "--end", "2025-03-05")
    assert code == 2 and "the data covers 2025-03-03..2025-03-04" in err
    with pytest.raises(SystemExit):
        main(["--days", "2", "--end", "2025-03-05"], today=TODAY)


def test_python_m_core_replay_is_the_same_cli():
    import core.replay

    assert core.replay.main is main
    out = subprocess.run([sys.executable, "-m", "core.replay", "--start", "2025-03-03", "--end", "2025-03-01"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == (
        "error: --start 2025-03-03 --end 2025-03-01: the end 2025-03-01 is before the start 2025-03-03")
