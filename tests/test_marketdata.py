"""Synthetic market realism and the bars-file loader's rejections."""

import io
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.clock import NY, session_bounds
from core.venues.marketdata import BAR_COLUMNS, BarDataError
from core.venues.sim.bar_files import ReplayMarket, bars_summary, load_bars, load_bars_bytes, validate_bars
from core.venues.sim.synthetic import SyntheticMarket

DAY = date(2025, 3, 4)


def day_frame(mkt: SyntheticMarket, day: date) -> pd.DataFrame:
    open_, close = session_bounds(day)
    return mkt.bars(mkt.symbols, open_, close)


def closes(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.pivot(index="timestamp", columns="symbol", values="close")


def test_same_seed_same_bars_whatever_the_chunking():
    a = SyntheticMarket(7, anchor=date(2025, 3, 3))
    b = SyntheticMarket(7, anchor=date(2025, 3, 3))
    open_, close = session_bounds(date(2025, 3, 5))
    whole = a.bars(a.symbols, session_bounds(date(2025, 3, 3))[0], close)
    # b is asked later days first, in small odd slices
    parts = []
    t = session_bounds(date(2025, 3, 3))[0]
    b.bars(b.symbols, open_, close)
    while t < close:
        nxt = t + timedelta(minutes=37)
        parts.append(b.bars(b.symbols, t, min(nxt, close)))
        t = nxt
    chunked = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(whole, chunked)
    other = SyntheticMarket(8, anchor=date(2025, 3, 3)).bars(a.symbols, session_bounds(date(2025, 3, 3))[0], close)
    assert not np.allclose(whole["close"].to_numpy(), other["close"].to_numpy())


def test_sessions_follow_the_nyse_calendar():
    mkt = SyntheticMarket(1, anchor=date(2025, 11, 24))
    n_sym = len(mkt.symbols)
    full = day_frame(mkt, date(2025, 11, 26))
    assert len(full) == 390 * n_sym
    half = day_frame(mkt, date(2025, 11, 28))  # day after Thanksgiving closes 13:00 ET
    assert len(half) == 210 * n_sym
    assert half["timestamp"].max().tz_convert(NY).strftime("%H:%M") == "12:59"
    xmas = mkt.bars(mkt.symbols, datetime(2025, 12, 25, tzinfo=UTC), datetime(2025, 12, 26, tzinfo=UTC))
    assert xmas.empty
    assert list(xmas.columns) == BAR_COLUMNS


def test_open_is_0930_new_york_across_dst():
    mkt = SyntheticMarket(1, anchor=date(2025, 3, 7))
    winter = day_frame(mkt, date(2025, 3, 7))["timestamp"].min()
    summer = day_frame(mkt, date(2025, 3, 10))["timestamp"].min()  # DST began 2025-03-09
    assert winter.tz_convert("UTC").strftime("%H:%M") == "14:30"
    assert summer.tz_convert("UTC").strftime("%H:%M") == "13:30"


def test_bars_are_valid_ohlcv_with_a_u_shaped_volume():
    mkt = SyntheticMarket(3, anchor=DAY)
    f = SyntheticMarket(3, anchor=DAY).frame_for_sessions(3)
    assert (f["high"] >= f[["open", "close"]].max(axis=1)).all()
    assert (f["low"] <= f[["open", "close"]].min(axis=1)).all()
    assert (f[["open", "high", "low", "close"]] > 0).all().all() and (f["volume"] >= 1).all()
    # each symbol's bars are contiguous: this bar's open is the previous bar's close within a session
    d = day_frame(mkt, DAY)
    c = closes(d)
    o = d.pivot(index="timestamp", columns="symbol", values="open")
    assert np.allclose(o.iloc[1:].to_numpy(), c.iloc[:-1].to_numpy())
    v = d.pivot(index="timestamp", columns="symbol", values="volume").sum(axis=1).to_numpy()
    edges = np.r_[v[:30], v[-30:]].mean()
    middle = v[180:210].mean()
    assert edges > 1.5 * middle


def test_baskets_move_together_and_inverse_etfs_track_minus_three():
    mkt = SyntheticMarket(5, anchor=DAY)
    c = closes(mkt.frame_for_sessions(3))
    r = np.log(c).diff().dropna()
    for members in (("AAPL", "MSFT", "AMZN", "META", "GOOGL"), ("NVDA", "AMD", "AVGO")):
        present = [m for m in members if m in r.columns]
        corr = r[present].corr().to_numpy()
        off = corr[~np.eye(len(present), dtype=bool)]
        assert off.mean() > 0.3, (members, off.mean())
    for index, inverse in (("QQQ", "SQQQ"), ("SOXX", "SOXS")):
        assert r[index].corr(r[inverse]) < -0.95
        beta = np.polyfit(r[index], r[inverse], 1)[0]
        assert -3.3 < beta < -2.7


def test_csv_and_parquet_round_trip(tmp_path):
    frame = SyntheticMarket(9, anchor=DAY).frame_for_sessions(1)
    csv, pq = tmp_path / "b.csv", tmp_path / "b.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(pq, index=False)
    for p in (csv, pq):
        back = load_bars(p)
        assert len(back) == len(frame)
        assert (back["timestamp"].to_numpy() == frame["timestamp"].to_numpy()).all()
        assert np.allclose(back["close"].to_numpy(), frame["close"].to_numpy())
    assert ReplayMarket(load_bars(csv)).sessions == [DAY]


def test_timestamp_forms_epoch_naive_and_offset(tmp_path):
    rows = [
        ("2025-03-04T14:30:00Z", 1), ("2025-03-04 09:31:00-05:00", 2), ("2025-03-04T14:32:00", 3),
    ]
    p = tmp_path / "t.csv"
    p.write_text("timestamp,symbol,open,high,low,close,volume\n" + "".join(
        f"{t},AAPL,10,11,9,10.5,{v}\n" for t, v in rows))
    got = load_bars(p)["timestamp"].dt.strftime("%H:%M").tolist()
    assert got == ["14:30", "14:31", "14:32"]
    e = tmp_path / "e.csv"
    e.write_text("timestamp,symbol,open,high,low,close,volume\n1741098600,AAPL,10,11,9,10.5,1\n")
    assert load_bars(e)["timestamp"].iloc[0] == pd.Timestamp("2025-03-04T14:30:00Z")


HEADER = "timestamp,symbol,open,high,low,close,volume"
GOOD = "2025-03-04T14:30:00Z,AAPL,10,11,9,10.5,100"
BAD_ROWS = [
    ("not-a-time,AAPL,10,11,9,10.5,100", "column timestamp: unparseable 'not-a-time'"),
    ("2025-03-04T14:31:00Z,AAPL,,11,9,10.5,100", "column open: empty or NaN"),
    ("2025-03-04T14:31:00Z, ,10,11,9,10.5,100", "column symbol: blank"),
    ("2025-03-04T14:31:00Z,AAPL,abc,11,9,10.5,100", "column open: not a number: 'abc'"),
    ("2025-03-04T14:31:00Z,AAPL,10,11,9,inf,100", "column close: not finite"),
    ("2025-03-04T14:31:00Z,AAPL,0,11,9,10.5,100", "column open: non-positive 0.0"),
    ("2025-03-04T14:31:00Z,AAPL,10,11,0.00001,10.5,100", "column low: 1e-05 is below the smallest price"),
    ("2025-03-04T14:31:00Z,AAPL,10,11,9,10.5,-5", "column volume: negative -5.0"),
    ("2025-03-04T14:31:00Z,AAPL,10,8,9,8.5,100", "column high: 8.0 < low 9.0"),
    ("2025-03-04T14:31:00Z,AAPL,12,11,9,10.5,100", "column open: 12.0 outside [low, high]"),
    ("2025-03-04T14:30:00Z,AAPL,10,11,9,10.5,100", "column timestamp: duplicate 2025-03-04T14:30:00+00:00 for AAPL"),
    ("2025-03-04T14:29:00Z,AAPL,10,11,9,10.5,100", "column timestamp: out-of-order 2025-03-04T14:29:00+00:00 for AAPL"),
]


@pytest.mark.parametrize(("bad_row", "message"), BAD_ROWS)
def test_each_bad_row_names_file_line_column_and_problem(tmp_path, bad_row, message):
    p = tmp_path / "bars.csv"
    p.write_text(HEADER + "\n" + GOOD + "\n" + bad_row + "\n")
    with pytest.raises(BarDataError) as e:
        load_bars(p)
    assert str(e.value).startswith("bars.csv line 3, " + message), str(e.value)


# where blank lines go (pandas skips them): before the header, between rows, whitespace-only, trailing
LAYOUTS = {
    "plain": ([HEADER, GOOD, "{bad}"], "\n"),
    "leading blank lines": (["", "", HEADER, GOOD, "{bad}"], "\n"),
    "blank lines between": ([HEADER, "", GOOD, "", "", "{bad}", ""], "\n"),
    "whitespace-only lines": ([HEADER, "   ", GOOD, "\t", " \t ", "{bad}", GOOD.replace("14:30", "14:45")], "\n"),
    "trailing whitespace lines": ([HEADER, GOOD, "", "{bad}", "  ", "\t", "", "   "], "\n"),
    "windows line endings": (["", HEADER, "", GOOD, " ", "{bad}", "", ""], "\r\n"),
    "old mac line endings": ([HEADER, "", GOOD, "{bad}", ""], "\r"),
    "quoted field over lines": ([HEADER, '2025-03-04T14:29:00Z,"AA\nPL",10,11,9,10.5,100', "", GOOD, "{bad}"], "\n"),
}


def layout_bytes(layout: str, bad_row: str) -> tuple[bytes, int]:
    """The file's bytes and the line (1-based) the bad row is on, counted from how the file is built."""
    lines, eol = LAYOUTS[layout]
    text = eol.join(line.format(bad=bad_row) for line in lines) + eol
    # each entry is one line, plus the line breaks inside a quoted field
    return text.encode(), sum(1 + line.count("\n") for line in lines[: lines.index("{bad}")]) + 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("bad_row", "message"), BAD_ROWS)
def test_bad_rows_name_the_real_line_around_blank_lines(tmp_path, layout, bad_row, message):
    data, line = layout_bytes(layout, bad_row)
    p = tmp_path / "bars.csv"
    p.write_bytes(data)
    with pytest.raises(BarDataError) as from_path:
        load_bars(p)
    with pytest.raises(BarDataError) as from_bytes:
        load_bars_bytes(data, "bars.csv")
    assert str(from_path.value).startswith(f"bars.csv line {line}, {message}"), (data, str(from_path.value))
    assert str(from_bytes.value) == str(from_path.value)


def test_blank_lines_anywhere_do_not_change_the_bars():
    second = GOOD.replace("14:30", "14:31")
    for layout, (lines, _) in LAYOUTS.items():
        data, _ = layout_bytes(layout, second)
        kept = [line.format(bad=second) for line in lines if line.strip()]
        want = load_bars_bytes(("\n".join(kept) + "\n").encode(), "a.csv")
        got = load_bars_bytes(data, "a.csv")
        pd.testing.assert_frame_equal(got, want)
        assert len(got) == len(kept) - 1, layout


def test_bytes_and_path_give_the_same_text_for_whole_file_problems(tmp_path):
    frame = SyntheticMarket(9, anchor=DAY).frame_for_sessions(1).head(20).copy()
    frame.loc[12, "low"] = -1.0
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    cases = {
        "cols.csv": b"timestamp,symbol,open,close\n2025-03-04T14:30:00Z,AAPL,1,1\n",
        "empty.csv": b"",
        "header.csv": (HEADER + "\n\n").encode(),
        "bad.parquet": b"not parquet at all",
        "rows.PARQUET": buf.getvalue(),
        "bars.json": b"{}",
        "ragged.csv": ("\n" + HEADER + "\n\n" + GOOD + "\n" + GOOD + ",1,2\n").encode(),
    }
    messages = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BarDataError) as from_path:
            load_bars(tmp_path / name)
        with pytest.raises(BarDataError) as from_bytes:
            load_bars_bytes(data, name)
        assert str(from_bytes.value) == str(from_path.value), name
        messages[name] = str(from_path.value)
    assert messages["cols.csv"] == "cols.csv: missing column(s) high, low, volume"
    assert messages["empty.csv"].startswith("empty.csv: cannot read")
    assert messages["header.csv"] == "header.csv: no rows"
    assert messages["bad.parquet"].startswith("bad.parquet: cannot read")
    assert messages["rows.PARQUET"].startswith("rows.PARQUET row 13, column low: non-positive -1.0")
    assert messages["bars.json"].startswith("bars.json: unsupported file type '.json'")
    # pandas' tokenizer names the real line itself; the message is one line
    assert messages["ragged.csv"].startswith("ragged.csv: cannot read") and "line 5," in messages["ragged.csv"]
    assert "\n" not in messages["ragged.csv"]
    # a browser may send a path as the name: the source is its base name
    with pytest.raises(BarDataError, match=r"^cols\.csv: missing"):
        load_bars_bytes(cases["cols.csv"], "C:\\Users\\me\\cols.csv".replace("\\", "/"))


@pytest.mark.parametrize("bad_at", [0, 7, 19])
def test_parquet_errors_name_the_one_based_row(tmp_path, bad_at):
    frame = SyntheticMarket(9, anchor=DAY).frame_for_sessions(1).head(20).copy()
    frame.loc[bad_at, "close"] = float("nan")
    p = tmp_path / "bars.pq"
    frame.to_parquet(p, index=False)
    with pytest.raises(BarDataError) as from_path:
        load_bars(p)
    assert str(from_path.value) == f"bars.pq row {bad_at + 1}, column close: empty or NaN"
    with pytest.raises(BarDataError) as from_bytes:
        load_bars_bytes(p.read_bytes(), "bars.pq")
    assert str(from_bytes.value) == str(from_path.value)


def test_bars_summary_counts_new_york_sessions():
    frame = SyntheticMarket(9, anchor=DAY).frame_for_sessions(2)
    late = frame[frame["symbol"] == "AAPL"].tail(1).copy()
    # 23:30 New York on the last session is already the next day in UTC: still that session
    late["timestamp"] = pd.Timestamp(datetime(2025, 3, 5, 23, 30, tzinfo=NY)).tz_convert("UTC")
    bars = validate_bars(pd.concat([frame, late], ignore_index=True), "x")
    summary = bars_summary(bars)
    assert summary == {"symbols": sorted(set(frame["symbol"])), "first": DAY, "last": date(2025, 3, 5),
                       "sessions": 2, "rows": len(frame) + 1}
    assert bars_summary(bars.iloc[0:0]) == {"symbols": [], "first": None, "last": None, "sessions": 0, "rows": 0}
    one = bars_summary(bars[(bars["symbol"] == "NVDA") & (bars["timestamp"] < pd.Timestamp("2025-03-05", tz="UTC"))])
    assert (one["symbols"], one["first"], one["last"], one["sessions"]) == (["NVDA"], DAY, DAY, 1)


def test_whole_file_problems(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("timestamp,symbol,open,close\n" + "2025-03-04T14:30:00Z,AAPL,1,1\n")
    with pytest.raises(BarDataError, match="missing column\\(s\\) high, low, volume"):
        load_bars(p)
    with pytest.raises(BarDataError, match="no such file"):
        load_bars(tmp_path / "nope.csv")
    j = tmp_path / "bars.json"
    j.write_text("{}")
    with pytest.raises(BarDataError, match="unsupported file type"):
        load_bars(j)
    pq = tmp_path / "bad.parquet"
    pq.write_bytes(b"not parquet at all")
    with pytest.raises(BarDataError, match="bad.parquet: cannot read"):
        load_bars(pq)
    frame = SyntheticMarket(9, anchor=DAY).frame_for_sessions(1).head(20).copy()
    frame.loc[12, "low"] = -1.0
    bad = tmp_path / "rows.parquet"
    frame.to_parquet(bad, index=False)
    with pytest.raises(BarDataError, match="rows.parquet row 13, column low: non-positive -1.0"):
        load_bars(bad)


def test_naive_datetimes_are_refused():
    mkt = SyntheticMarket(1, anchor=DAY)
    with pytest.raises(ValueError, match="naive datetime"):
        mkt.bars(mkt.symbols, datetime(2025, 3, 4, 14, 30), datetime(2025, 3, 4, 15, 0))


@pytest.mark.parametrize("when", ["3000-01-01T00:00:00Z", "1600-01-01T00:00:00Z"])
def test_a_timestamp_outside_the_nanosecond_range_is_refused_with_its_line(when):
    from core.venues.sim.bar_files import load_bars_bytes

    text = ("timestamp,symbol,open,high,low,close,volume\n"
            "2025-03-03T14:31:00Z,AAPL,1,1,1,1,1\n"
            f"{when},AAPL,1,1,1,1,1\n")
    with pytest.raises(BarDataError, match="bars.csv line 3, column timestamp: unparseable"):
        load_bars_bytes(text.encode(), "bars.csv")
