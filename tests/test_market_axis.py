"""Issue 27 items 6 and 7 (charts): equity on a market-hours axis across Thanksgiving, its half day and a DST
switch; a flat curve's dollar axis; the MAE/MFE scatter without a trade. Fixed sessions, no clock."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.clock import session_bounds, sessions_between
from ui import charts

PX_PER_LABEL = 60  # a date label ("Nov 30") and its gap at the chart's font
CHART_PX_1280 = 780  # the plot area of a full-width chart at 1280 px beside the sidebar


def minute_curve(first: date, last: date, step: str = "5min") -> pd.DataFrame:
    """Equity sampled every ``step`` through every session from ``first`` to ``last``, open and close included."""
    ts: list[pd.Timestamp] = []
    for d in sessions_between(first, last):
        o, c = (pd.Timestamp(b).tz_convert("UTC") for b in session_bounds(d))  # type: ignore[union-attr]
        ts += list(pd.date_range(o, c, freq=step))
    return pd.DataFrame({"ts": ts, "equity": 100_000 + np.arange(len(ts), dtype=float)})


def session_spans(fig, df: pd.DataFrame) -> dict[date, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """(first x, last x) of each New York date's points."""
    x = np.asarray(fig.data[0].x, dtype=float)
    days = pd.to_datetime(df["ts"], utc=True).dt.tz_convert("America/New_York").dt.date
    return {d: (float(x[(days == d).to_numpy()].min()), float(x[(days == d).to_numpy()].max()))
            for d in sorted(set(days))}


def assert_labels_readable(fig, end_h: float) -> None:  # type: ignore[no-untyped-def]
    vals, texts = list(fig.layout.xaxis.tickvals), list(fig.layout.xaxis.ticktext)
    assert len(texts) == len(set(texts)), texts  # no label printed twice
    gaps = np.diff(vals)
    assert (gaps > 0).all()
    # no two labels on top of each other at 1280 px
    assert gaps.min() / end_h * CHART_PX_1280 >= PX_PER_LABEL, (vals, texts)


@pytest.mark.parametrize("draw", ["overlay", "line"])
def test_equity_across_thanksgiving_and_its_half_day_is_drawn_session_after_session(draw):
    df = minute_curve(date(2026, 11, 23), date(2026, 11, 30))
    fig = charts.equity_overlay([("#1 run", df, None)]) if draw == "overlay" else charts.equity_line(df)
    x = np.asarray(fig.data[0].x, dtype=float)
    assert (np.diff(x) >= 0).all()  # never back over an earlier session
    spans = session_spans(fig, df)
    assert list(spans) == [date(2026, 11, d) for d in (23, 24, 25, 27, 30)]  # Thursday the 26th: closed
    assert [round(b - a, 6) for a, b in spans.values()] == [6.5, 6.5, 6.5, 3.5, 6.5]  # Friday closes at 13:00
    starts = [a for a, _ in spans.values()]
    ends = [b for _, b in spans.values()]
    assert starts == [0.0, 6.5, 13.0, 19.5, 23.0] and ends[:-1] == starts[1:]  # each opens where the last closed
    assert list(fig.layout.xaxis.range) == [0.0, 29.5]
    assert list(fig.layout.xaxis.ticktext) == ["Nov 23", "Nov 24", "Nov 25", "Nov 27", "Nov 30"]
    assert list(fig.layout.xaxis.tickvals) == starts
    assert_labels_readable(fig, 29.5)
    assert not fig.layout.xaxis.rangebreaks  # nothing left for plotly to fold over itself
    hover = list(fig.data[0].customdata)
    assert hover[0] == "Mon 2026-11-23 09:30 ET" and hover[-1] == "Mon 2026-11-30 16:00 ET"
    assert "Fri 2026-11-27 13:00 ET" in hover and not any("2026-11-27 13:05" in h for h in hover)


def test_equity_across_the_end_of_daylight_saving_time():
    # Sunday 2026-11-01 the clocks go back: Friday opens at 13:30 UTC, Monday at 14:30 UTC, both 09:30 in New York
    df = minute_curve(date(2026, 10, 30), date(2026, 11, 3))
    fig = charts.equity_overlay([("#2 run", df, None)])
    spans = session_spans(fig, df)
    assert list(spans) == [date(2026, 10, 30), date(2026, 11, 2), date(2026, 11, 3)]
    assert list(spans.values()) == [(0.0, 6.5), (6.5, 13.0), (13.0, 19.5)]
    assert list(fig.layout.xaxis.ticktext) == ["Oct 30", "Nov 02", "Nov 03"]
    assert_labels_readable(fig, 19.5)
    hover = list(fig.data[0].customdata)
    assert hover[0] == "Fri 2026-10-30 09:30 ET" and "Mon 2026-11-02 09:30 ET" in hover


def test_a_month_is_labelled_with_at_most_eight_dates_and_a_day_with_its_hours():
    month = minute_curve(date(2026, 10, 1), date(2026, 10, 30), "30min")
    fig = charts.equity_overlay([("#3 run", month, None)])
    assert len(fig.layout.xaxis.ticktext) <= charts.MAX_DATE_TICKS and fig.layout.xaxis.ticktext[0] == "Oct 01"
    assert_labels_readable(fig, 22 * 6.5)
    day = minute_curve(date(2026, 11, 27), date(2026, 11, 27), "1min")  # the half day alone
    fig = charts.equity_line(day)
    assert list(fig.layout.xaxis.ticktext) == ["09:30<br>Nov 27", "10:00", "11:00", "12:00"]
    assert list(fig.layout.xaxis.range) == [0.0, 3.5]


def test_a_time_outside_the_sessions_is_kept_at_the_close_before_it():
    ts = pd.to_datetime(["2026-11-25T21:00:00Z", "2026-11-25T23:30:00Z", "2026-11-27T14:30:00Z",
                         "2026-11-27T19:00:00Z"], utc=True)  # 16:00, 18:30 (closed), Fri 09:30, 14:00 (closed)
    fig = charts.equity_line(pd.DataFrame({"ts": ts, "equity": [1.0, 2.0, 3.0, 4.0]}))
    assert list(fig.data[0].x) == [6.5, 6.5, 6.5, 10.0]


def plotly_tick_labels(yaxis) -> list[str]:  # type: ignore[no-untyped-def]
    """The labels plotly prints for an axis with a fixed range and step (tick0 + k * dtick inside the range)."""
    lo, hi = yaxis.range
    k0 = int(np.ceil((lo - yaxis.tick0) / yaxis.dtick))
    k1 = int(np.floor((hi - yaxis.tick0) / yaxis.dtick))
    return [f"{yaxis.tickprefix}{yaxis.tick0 + k * yaxis.dtick:,.0f}" for k in range(k0, k1 + 1)]


@pytest.mark.parametrize("values", [[100_000.6] * 50, list(np.linspace(100_000.2, 100_001.4, 50))])
def test_a_flat_equity_curve_has_distinct_dollar_labels(values):
    ts = pd.date_range("2026-10-05T13:30:00Z", periods=len(values), freq="1min")
    for fig in (charts.equity_line(pd.DataFrame({"ts": ts, "equity": values})),
                charts.equity_overlay([("#4 flat", pd.DataFrame({"ts": ts, "equity": values}), None)])):
        y = fig.layout.yaxis
        assert y.tickformat == ",.0f" and y.range is not None and y.dtick >= 1  # whole dollars, one label each
        labels = plotly_tick_labels(y)
        assert len(labels) >= 3 and len(labels) == len(set(labels)), labels
        assert y.range[0] <= min(values) and max(values) <= y.range[1]


def test_a_moving_equity_curve_keeps_plotlys_own_ticks():
    ts = pd.date_range("2026-10-05T13:30:00Z", periods=3, freq="1min")
    y = charts.equity_line(pd.DataFrame({"ts": ts, "equity": [100_000.0, 100_400.0, 99_800.0]})).layout.yaxis
    assert y.range is None and y.dtick is None


def test_an_empty_mae_mfe_scatter_spans_a_percent_not_four_hundred():
    fig = charts.mae_mfe_scatter(pd.DataFrame())
    assert list(fig.layout.xaxis.range) == [-0.01, 0.01] and list(fig.layout.yaxis.range) == [-0.01, 0.01]
    assert fig.layout.annotations[0].text == "no closed trade yet"
    trades = pd.DataFrame({"pnl": [1.0], "mae": [-0.002], "mfe": [0.004], "symbol": ["NVDA"]})
    assert charts.mae_mfe_scatter(trades).layout.xaxis.range is None  # with a trade: fitted to the trades
