from datetime import date, datetime, timedelta

import pytest

from core.clock import NY, UTC, SimClock, is_rth, session_bounds, trading_date, trading_sessions


def test_dst_moves_the_open_in_utc_not_in_new_york():
    before = session_bounds(date(2025, 3, 7))  # EST
    after = session_bounds(date(2025, 3, 10))  # EDT
    assert before[0].astimezone(UTC).hour == 14 and after[0].astimezone(UTC).hour == 13
    assert before[0].hour == after[0].hour == 9 and before[0].minute == 30


def test_holidays_and_early_closes():
    assert session_bounds(date(2025, 12, 25)) is None
    assert session_bounds(date(2025, 11, 27)) is None  # Thanksgiving
    assert session_bounds(date(2025, 11, 28))[1].hour == 13  # early close
    assert trading_sessions(date(2025, 11, 26), 3) == [date(2025, 11, 26), date(2025, 11, 28), date(2025, 12, 1)]


def test_is_rth_edges():
    open_ = session_bounds(date(2025, 3, 10))[0]
    close = session_bounds(date(2025, 3, 10))[1]
    assert is_rth(open_) and not is_rth(open_ - timedelta(seconds=1))
    assert not is_rth(close) and is_rth(close - timedelta(seconds=1))
    assert not is_rth(datetime(2025, 3, 8, 15, 0, tzinfo=UTC))  # Saturday


@pytest.mark.parametrize(
    ("utc", "ny_date"),
    [
        (datetime(2025, 3, 8, 4, 30, tzinfo=UTC), date(2025, 3, 7)),  # EST: 23:30 on the 7th
        (datetime(2025, 3, 8, 5, 30, tzinfo=UTC), date(2025, 3, 8)),
        (datetime(2025, 3, 11, 3, 30, tzinfo=UTC), date(2025, 3, 10)),  # EDT: 23:30 on the 10th
        (datetime(2025, 3, 11, 4, 30, tzinfo=UTC), date(2025, 3, 11)),
        (datetime(2025, 11, 3, 4, 30, tzinfo=UTC), date(2025, 11, 2)),  # fall back night
        (datetime(2025, 11, 3, 5, 0, tzinfo=UTC), date(2025, 11, 3)),
    ],
)
def test_day_keys_roll_at_new_york_midnight(utc, ny_date):
    assert trading_date(utc) == ny_date


def test_sim_clock_refuses_naive_and_backwards():
    c = SimClock(datetime(2025, 3, 10, 14, 0, tzinfo=UTC))
    with pytest.raises(ValueError):
        c.set(datetime(2025, 3, 10, 13, 0, tzinfo=UTC))
    with pytest.raises(ValueError):
        SimClock(datetime(2025, 3, 10, 14, 0))
    assert c.advance(30) == datetime(2025, 3, 10, 14, 0, 30, tzinfo=UTC)
    assert c.now().tzinfo is not None and datetime(2025, 3, 10, 10, 0, tzinfo=NY) == c.now() - timedelta(seconds=30)
