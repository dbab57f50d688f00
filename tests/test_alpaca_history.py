"""AlpacaMarketData.history through the real alpaca-py client against the Alpaca-shaped server on 127.0.0.1:
paging, a 429 mid-way, the Parquet cache (zero requests the second time, even with the server gone), progress,
and what ``cached_days`` reports."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from core.clock import NY, UTC, session_bounds, sessions_between
from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client
from core.venues.marketdata import BAR_COLUMNS
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket
from tests.fakes.alpaca_server import FakeAlpaca

KEY, SECRET = "PKHISTORY0123456789", "SECRETHISTORY9876543210"
SYMBOLS = ["AAPL", "NVDA", "TSLA"]
FIRST, LAST = date(2025, 3, 3), date(2025, 3, 6)  # Monday..Thursday
TODAY = date(2025, 3, 7)  # every day of the range is complete
HALT = ("NVDA", date(2025, 3, 5))  # no bars at all that day
PAGE = 250  # the server's page cap: a day of 3 symbols (1170 bars) takes 5 pages


def ny(day: date, hh: int, mm: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY).astimezone(UTC)


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    """The bars the server holds: 5 synthetic sessions of 3 symbols, NVDA halted all of one day."""
    frame = SyntheticMarket(3, anchor=FIRST).frame_for_sessions(5)
    frame = frame[frame["symbol"].isin(SYMBOLS)]
    halted = (frame["symbol"] == HALT[0]) & (frame["timestamp"].dt.tz_convert(NY).dt.date == HALT[1])
    return frame[~halted].reset_index(drop=True)


@pytest.fixture
def fake(source: pd.DataFrame) -> Iterator[FakeAlpaca]:
    srv = FakeAlpaca(ReplayMarket(source), universe_symbols=SYMBOLS, api_key=KEY, secret_key=SECRET,
                     rate_limit_per_min=1_000_000).start()
    srv.max_bars_page = PAGE
    srv.set_time(ny(TODAY, 10, 0))
    yield srv
    srv.stop()


def market_data(url: str, cache: Path | None, waits: list[float] | None = None) -> AlpacaMarketData:
    caller = AlpacaCaller(RequestBudget(1000), sleep=(waits.append if waits is not None else lambda s: None))
    return AlpacaMarketData(make_data_client(KEY, SECRET, url_override=url, timeout_s=2), caller=caller,
                            cache_dir=cache)


def expected(source: pd.DataFrame, symbols: list[str], first: date, last: date) -> pd.DataFrame:
    """The regular-session bars of the range as they cross the wire (prices to 4 decimals, whole volumes)."""
    keep = pd.Series(False, index=source.index)
    for day in sessions_between(first, last):
        open_, close = session_bounds(day)  # type: ignore[misc]
        keep |= (source["timestamp"] >= open_) & (source["timestamp"] < close)
    out = source[keep & source["symbol"].isin(symbols)].copy()
    for c in ("open", "high", "low", "close"):
        out[c] = out[c].map(lambda v: round(v, 4))
    out["volume"] = out["volume"].map(lambda v: float(int(v)))
    return out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def pages(want: pd.DataFrame) -> int:
    per_day = want.groupby(want["timestamp"].dt.tz_convert(NY).dt.date).size()
    return sum(math.ceil(n / PAGE) for n in per_day)


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == BAR_COLUMNS
    assert not got.duplicated(["symbol", "timestamp"]).any()
    assert got.equals(got.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_paged_days_come_back_whole_once_and_sorted_with_progress_per_day(tmp_path, fake, source):
    md = market_data(fake.url, tmp_path / "cache")
    calls: list[tuple[int, int]] = []
    got = md.history(SYMBOLS, FIRST, LAST, today=TODAY, progress=lambda done, total: calls.append((done, total)))
    want = expected(source, SYMBOLS, FIRST, LAST)
    same_bars(got, want)
    assert got.groupby("symbol").size().to_dict() == {"AAPL": 4 * 390, "NVDA": 3 * 390, "TSLA": 4 * 390}
    assert fake.count("GET", "/v2/stocks/bars") == pages(want) > len(calls)  # several pages a day
    assert md.requests == len(calls) == 4  # one call per session; alpaca-py follows the pages
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_429_in_the_middle_is_retried_after_retry_after_and_the_result_is_complete(tmp_path, fake, source):
    waits: list[float] = []
    md = market_data(fake.url, tmp_path / "cache", waits)
    fake.inject("429", path="/v2/stocks/bars", after=7, retry_after=3)  # page 3 of the second day
    got = md.history(SYMBOLS, FIRST, LAST, today=TODAY)
    want = expected(source, SYMBOLS, FIRST, LAST)
    same_bars(got, want)
    assert fake.pending_faults == []  # the 429 was served
    assert md.call.retries == 1 and waits == [3.0]  # Retry-After honoured (recorded, not slept)
    assert fake.count("GET", "/v2/stocks/bars") > pages(want)  # the refused page was asked again


def test_a_cached_range_makes_zero_requests_even_with_the_server_gone(tmp_path, fake, source):
    cache = tmp_path / "cache"
    first = market_data(fake.url, cache).history(SYMBOLS, FIRST, LAST, today=TODAY)
    served = len(fake.requests)
    assert served > 0
    again = market_data(fake.url, cache)
    calls: list[tuple[int, int]] = []
    second = again.history(SYMBOLS, FIRST, LAST, today=TODAY, progress=lambda d, t: calls.append((d, t)))
    assert len(fake.requests) == served  # counted by the server: nothing at all was asked
    assert again.requests == 0
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # cached days report progress too
    pd.testing.assert_frame_equal(second, first)
    # the halted day is cached as an empty file with a full day's dtypes, so it is not asked again either
    empty = pd.read_parquet(cache / "iex" / HALT[0] / f"{HALT[1].isoformat()}.parquet")
    full = pd.read_parquet(cache / "iex" / HALT[0] / f"{FIRST.isoformat()}.parquet")
    assert len(empty) == 0 and len(full) == 390
    assert list(empty.columns) == BAR_COLUMNS and empty.dtypes.to_dict() == full.dtypes.to_dict()
    # offline: the server is gone; building a client and reading the cached range needs no network
    fake.stop()
    offline = market_data(fake.url, cache)
    pd.testing.assert_frame_equal(offline.history(SYMBOLS, FIRST, LAST, today=TODAY), first)
    assert offline.requests == 0


def test_cached_days_before_and_after(tmp_path, fake, source):
    md = market_data(fake.url, tmp_path / "cache")
    days = sessions_between(FIRST, LAST)
    before = md.cached_days(SYMBOLS, FIRST, LAST)
    assert (before.full, before.partial, before.missing) == ((), (), tuple(days))
    assert str(before) == "0 of 4 days cached"
    # on the third day the third and fourth are not complete: fetched, never cached
    md.history(SYMBOLS, FIRST, LAST, today=days[2])
    mid = md.cached_days(SYMBOLS, FIRST, LAST)
    assert (mid.full, mid.partial, mid.missing) == (tuple(days[:2]), (), tuple(days[2:]))
    assert str(mid) == "2 of 4 days cached"
    # one symbol later on: those two days are partly cached
    md.history(["AAPL"], FIRST, LAST, today=TODAY)
    part = md.cached_days(SYMBOLS, FIRST, LAST)
    assert (part.full, part.partial, part.missing) == (tuple(days[:2]), tuple(days[2:]), ())
    assert md.cached_days(["AAPL", "AAPL"], FIRST, LAST).full == tuple(days)
    # the rest: only the symbols missing on the partly cached days are asked for
    asked = fake.count("GET", "/v2/stocks/bars")
    got = md.history(SYMBOLS + ["AAPL"], FIRST, LAST, today=TODAY)
    rest = expected(source, ["NVDA", "TSLA"], days[2], days[3])
    assert fake.count("GET", "/v2/stocks/bars") - asked == pages(rest)
    same_bars(got, expected(source, SYMBOLS, FIRST, LAST))
    after = md.cached_days(SYMBOLS, FIRST, LAST)
    assert (after.full, after.partial, after.missing, after.days) == (tuple(days), (), (), 4)
    assert str(after) == "4 of 4 days cached"
    # no cache directory: nothing is cached, and nothing is written anywhere
    assert market_data(fake.url, None).cached_days(SYMBOLS, FIRST, LAST).missing == tuple(days)


def test_a_damaged_cache_file_is_downloaded_again(tmp_path, fake, source):
    cache = tmp_path / "cache"
    md = market_data(fake.url, cache)
    md.history(["AAPL"], FIRST, FIRST, today=TODAY)
    f = cache / "iex" / "AAPL" / f"{FIRST.isoformat()}.parquet"
    f.write_bytes(f.read_bytes()[:100])  # a truncated file
    asked = fake.count("GET", "/v2/stocks/bars")
    got = md.history(["AAPL"], FIRST, FIRST, today=TODAY)
    same_bars(got, expected(source, ["AAPL"], FIRST, FIRST))
    assert fake.count("GET", "/v2/stocks/bars") == asked + 2  # 390 bars: two pages
    assert len(pd.read_parquet(f)) == 390  # rewritten whole
    assert not list(f.parent.glob(".*.tmp"))  # no temporary file left behind


def test_a_day_without_any_bars_is_cached_empty_with_the_dtypes_of_a_full_day(tmp_path, fake, source):
    cache = tmp_path / "cache"
    md = market_data(fake.url, cache)
    assert md.history(["ZZZZ"], FIRST, FIRST, today=TODAY).empty  # the server knows no such symbol: no bars
    md.history(["AAPL"], FIRST, FIRST, today=TODAY)
    empty = pd.read_parquet(cache / "iex" / "ZZZZ" / f"{FIRST.isoformat()}.parquet")
    full = pd.read_parquet(cache / "iex" / "AAPL" / f"{FIRST.isoformat()}.parquet")
    assert len(empty) == 0 and len(full) == 390
    assert list(empty.columns) == BAR_COLUMNS and empty.dtypes.to_dict() == full.dtypes.to_dict()
    asked = fake.count("GET", "/v2/stocks/bars")
    got = md.history(["ZZZZ", "AAPL"], FIRST, FIRST, today=TODAY)
    assert fake.count("GET", "/v2/stocks/bars") == asked
    same_bars(got, expected(source, ["AAPL"], FIRST, FIRST))


def test_a_research_download_waits_for_the_request_budget_where_a_live_call_is_refused():
    from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
    from core.venues.broker import BrokerError

    t = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        t[0] += s

    def budget() -> RequestBudget:
        b = RequestBudget(2, clock=lambda: t[0])
        b._sleep = sleep  # the window's own wait, on the test's clock
        return b

    live = AlpacaCaller(budget())
    assert [live("bars", lambda: 1) for _ in range(2)] == [1, 1]
    with pytest.raises(BrokerError, match="budget"):
        live("bars", lambda: 1)
    research = AlpacaCaller(budget(), queue=True)
    t[0] = 100.0
    assert [research("bars", lambda i=i: i) for i in range(3)] == [0, 1, 2]
    assert slept == [pytest.approx(60.0)]  # the third request waited for the first one's minute to pass
