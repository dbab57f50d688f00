"""Issue 28: every bar the live engine used is kept in the local bar cache (one Parquet file per symbol and New York
day, as the Alpaca history cache), with its source and time of receipt; written off the tick, atomically; read back
by the history cache (files with or without the new columns) and by a session replay of an Alpaca session."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.clock import NY, UTC
from core.venues.alpaca.bar_cache import (
    LIVE_COLUMNS,
    LiveBarKeeper,
    day_file,
    live_root,
    read_day_file,
    read_live_bars,
    write_day_file,
)
from core.venues.marketdata import BAR_COLUMNS
from tests.test_alpaca import DAY, drive, fake, ny, runtime, settings_for  # noqa: F401  (fake is a fixture)

ROOT = Path(__file__).resolve().parents[1]
PREV = date(2025, 3, 3)  # the session before DAY
WARM = date(2025, 2, 28)  # the one before: the live feed's first load reaches back 4 days, into its afternoon


def bars(day: date, hh: int, mm: int, n: int, symbols: tuple[str, ...] = ("AAPL", "MSFT"), base: float = 100.0):
    """``n`` minutes of bars from New York ``hh:mm`` of ``day``, one per symbol and minute."""
    t0 = datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY).astimezone(UTC)
    rows = [{"timestamp": t0 + timedelta(minutes=i), "symbol": s, "open": base + i, "high": base + i + 0.5,
             "low": base + i - 0.5, "close": base + i + 0.25, "volume": 1000.0 + i}
            for i in range(n) for s in symbols]
    frame = pd.DataFrame(rows)[BAR_COLUMNS]
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ns")
    return frame


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def test_kept_bars_go_to_one_file_per_symbol_and_day_with_source_and_time(tmp_path):
    root = live_root(tmp_path / "cache", "iex")
    clock = Clock(ny(9, 31))
    keeper = LiveBarKeeper(root, "alpaca-live:iex", clock, flush_every_s=300)
    first = pd.concat([bars(PREV, 15, 58, 2), bars(DAY, 9, 30, 1)], ignore_index=True)  # warm-up and today
    keeper.add(first)
    assert keeper.pending == 6 and not root.exists()  # the tick only appends in memory
    assert not keeper.due()
    clock.t = ny(9, 32)
    revised = bars(DAY, 9, 30, 2, base=200.0)  # 9:30 again (other values) and 9:31
    keeper.add(revised)
    clock.t = ny(9, 35) + timedelta(seconds=59)
    assert not keeper.due()  # 4 min 59 s after the first bars were held
    clock.t = ny(9, 36)
    assert keeper.due()
    assert keeper.flush() == 8 and keeper.pending == 0 and not keeper.due()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet")) == [
        f"AAPL/{PREV}.parquet", f"AAPL/{DAY}.parquet", f"MSFT/{PREV}.parquet", f"MSFT/{DAY}.parquet"]
    got = read_live_bars(root, ["AAPL", "MSFT"], PREV, DAY)
    assert list(got.columns) == LIVE_COLUMNS and len(got) == 8
    assert set(got["source"]) == {"alpaca-live:iex"}
    aapl = got[(got["symbol"] == "AAPL") & (got["timestamp"] >= ny(9, 30))].reset_index(drop=True)
    # the 9:30 bar as live first received it (at 9:31), not the later copy; 9:31 received at 9:32
    assert aapl["open"].tolist() == [100.0, 201.0]
    assert aapl["received_at"].tolist() == [pd.Timestamp(ny(9, 31)), pd.Timestamp(ny(9, 32))]
    # a second flush merges into the files: new minutes added, the first copy of a minute kept
    clock.t = ny(9, 40)
    keeper.add(bars(DAY, 9, 31, 2, base=300.0))
    assert keeper.flush() == 2
    aapl = read_day_file(day_file(root, "AAPL", DAY), provenance=True)
    assert aapl["open"].tolist() == [100.0, 201.0, 301.0]
    assert aapl["received_at"].iloc[-1] == pd.Timestamp(ny(9, 40))
    assert keeper.written == 10
    assert not list(root.rglob(".*.tmp"))


def test_the_history_cache_reads_files_with_and_without_the_new_columns(tmp_path):
    from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
    from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

    cache = tmp_path / "cache"
    old = bars(PREV, 9, 30, 390, symbols=("AAPL",))
    f_old = day_file(cache / "iex", "AAPL", PREV)
    f_old.parent.mkdir(parents=True)
    old.to_parquet(f_old, index=False)  # as the history cache wrote days before this change
    new = bars(DAY, 9, 30, 390, symbols=("AAPL",)).assign(source="alpaca-live:iex", received_at=pd.Timestamp(ny(16, 0)))
    write_day_file(day_file(cache / "iex", "AAPL", DAY), new)  # a day with provenance (a copied live file)
    # nothing may be asked: the port below is closed, and every day is cached
    md = AlpacaMarketData(make_data_client("k", "s", url_override="http://127.0.0.1:9", timeout_s=1),
                          caller=AlpacaCaller(RequestBudget(10), max_retries=0), cache_dir=cache)
    got = md.history(["AAPL"], PREV, DAY, today=date(2025, 3, 5))
    assert list(got.columns) == BAR_COLUMNS and len(got) == 780 and md.requests == 0
    pd.testing.assert_frame_equal(got.iloc[:390].reset_index(drop=True), old, check_dtype=False)
    plain = read_day_file(f_old, provenance=True)
    assert plain is not None and plain["source"].isna().all() and plain["received_at"].isna().all()
    # a file that lacks a bar column is not a cached day
    old.drop(columns=["volume"]).to_parquet(f_old, index=False)
    assert read_day_file(f_old) is None


_KILL_MID_WRITE = """
import os, signal, sys
import pandas as pd
from pathlib import Path
from core.venues.alpaca.bar_cache import write_day_file

real = pd.DataFrame.to_parquet

def half_then_die(self, path, *a, **k):
    real(self, path, *a, **k)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])  # half of the new file is on disk ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... when the process is killed

pd.DataFrame.to_parquet = half_then_die
write_day_file(Path(sys.argv[1]), pd.read_parquet(sys.argv[2]))
"""


def test_a_kill_9_in_the_middle_of_a_write_leaves_the_old_file_whole(tmp_path):
    target = day_file(tmp_path / "live" / "iex", "AAPL", DAY)
    old = bars(DAY, 9, 30, 30, symbols=("AAPL",)).assign(source="alpaca-live:iex",
                                                         received_at=pd.Timestamp(ny(10, 0)))
    write_day_file(target, old)
    newer = tmp_path / "newer.parquet"
    bars(DAY, 9, 30, 60, symbols=("AAPL",), base=50.0).assign(
        source="alpaca-live:iex", received_at=pd.Timestamp(ny(10, 30))).to_parquet(newer, index=False)
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(target), str(newer)], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(target.parent.glob(".*.tmp")), "the kill came after the temporary file was (half) written"
    kept = read_day_file(target, provenance=True)
    assert kept is not None
    pd.testing.assert_frame_equal(kept, old[LIVE_COLUMNS], check_dtype=False)
    # and a write that fails with an error (a full disk) leaves it whole too, with no temporary file of its own
    real = pd.DataFrame.to_parquet

    def fail(self, path, *a, **k):  # noqa: ANN001, ANN202
        Path(path).write_bytes(b"PAR1 half")
        raise OSError(28, "No space left on device")

    pd.DataFrame.to_parquet = fail  # type: ignore[method-assign]
    try:
        before = set(target.parent.glob(".*.tmp"))
        with pytest.raises(OSError):
            write_day_file(target, pd.read_parquet(newer))
    finally:
        pd.DataFrame.to_parquet = real  # type: ignore[method-assign]
    assert set(target.parent.glob(".*.tmp")) == before
    pd.testing.assert_frame_equal(read_day_file(target, provenance=True), old[LIVE_COLUMNS], check_dtype=False)


def test_the_live_engine_keeps_every_bar_it_used_off_the_tick(tmp_path, fake):  # noqa: F811
    s = settings_for(tmp_path, fake, market_data="alpaca")
    rt = runtime(s, ny(10, 0))
    fake.set_time(ny(10, 0))
    root = live_root(s.alpaca_cache_dir, "iex")
    assert rt.live_bars is not None and rt.live_bars.source == "alpaca-live:iex"
    drive(rt, fake, ny(10, 4))
    assert rt.live_bars.pending > 0 and not root.exists()  # ticks wrote nothing
    rt.run_session_events()
    assert not root.exists()  # not due yet: the bars held are younger than 5 minutes
    drive(rt, fake, ny(10, 6))
    assert "live_bars" in rt.run_session_events() and root.exists()  # due: written by the job, not the tick
    drive(rt, fake, ny(10, 10))
    feed = rt.engine.feed
    rt.stop()  # the rest is written on the way out
    got = read_live_bars(root, s.universe.all_symbols, WARM, DAY)
    assert set(got["source"]) == {"alpaca-live:iex"} and got["received_at"].notna().all()
    # the bars the engine scored, every one of them, as it received them
    ts = (got["timestamp"].astype("int64") // 10**9).to_numpy()
    assert sorted(set(ts)) == sorted(int(t) for t in feed.ts)
    for sym in ("AAPL", "SOXS"):
        mine = got[got["symbol"] == sym].reset_index(drop=True)
        j = feed.col[sym]
        assert mine["close"].tolist() == pytest.approx(feed.close[:, j].tolist())
    # the warm-up (4 days back) came with the first tick (10:00:30); the 10:05 bar with the 10:06 tick (the local
    # server publishes a bar the instant its minute ends)
    first_tick = got[got["timestamp"] < pd.Timestamp(ny(10, 0))]["received_at"].unique()
    assert list(first_tick) == [pd.Timestamp(ny(10, 0) + timedelta(seconds=30))]
    at = got[(got["symbol"] == "AAPL") & (got["timestamp"] == pd.Timestamp(ny(10, 5)))]["received_at"]
    assert at.tolist() == [pd.Timestamp(ny(10, 6))]
    assert {p.stem for p in (root / "AAPL").iterdir()} == {str(WARM), str(PREV), str(DAY)}  # one file per day


def test_a_session_replay_takes_the_kept_live_bars_without_a_history(tmp_path):
    """Offline, without keys and with no history cached, an Alpaca session is replayed on the bars live kept."""
    from core.config import load_settings
    from core.research.session_replay import SessionReplayError, alpaca_session_bars

    s = load_settings(_env_file=None, alpaca_cache_dir=str(tmp_path / "cache"), alpaca_data_url="http://127.0.0.1:9")
    with pytest.raises(SessionReplayError, match="no bars for the Alpaca session"):
        alpaca_session_bars(s, DAY)
    keeper = LiveBarKeeper(live_root(s.alpaca_cache_dir, "iex"), "alpaca-live:iex", Clock(ny(16, 0)))
    keeper.add(pd.concat([bars(PREV, 9, 30, 5), bars(DAY, 9, 30, 5)], ignore_index=True))
    keeper.flush()
    got, kept, source = alpaca_session_bars(s, DAY)
    assert len(got) == 20 and list(got.columns) == BAR_COLUMNS and len(kept) == 20
    assert source.startswith("the 20 bars live received (no Alpaca keys here")
    # with the history of every day cached (no keys needed), the history is what is replayed
    for day in (date(2025, 2, 27), date(2025, 2, 28), PREV, DAY):
        for sym in s.universe.all_symbols:
            write_day_file(day_file(Path(s.alpaca_cache_dir) / "iex", sym, day),
                           bars(day, 9, 30, 3, symbols=(sym,), base=400.0))
    got, kept, source = alpaca_session_bars(s, DAY)
    assert source.startswith("Alpaca history (iex), compared with the 20 bars live received")
    assert set(got["open"].round(0)) == {400.0, 401.0, 402.0} and len(kept) == 20
