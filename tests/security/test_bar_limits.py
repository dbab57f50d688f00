"""Issue 30, uploads: a bar file over the row or symbol limit is refused with the file's name and the limit, before
pandas holds its rows; the caption listing a file's symbols stays short."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from core.venues.marketdata import BarDataError
from core.venues.sim import bar_files
from tests.security.helpers import bars_bytes


def test_a_csv_over_the_row_limit_is_refused_before_it_is_parsed(monkeypatch):
    header = b"timestamp,symbol,open,high,low,close,volume\n"
    body = header + b"1741012200,AAA,1,1,1,1,1\n" * (bar_files.MAX_ROWS + 1)  # the real limit: 2,000,001 rows

    def no_parse(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("parsed before the rows were counted")

    monkeypatch.setattr(pd, "read_csv", no_parse)
    with pytest.raises(BarDataError, match=r"big\.csv: 2,000,001 rows; a bar file may hold at most 2,000,000 rows"):
        bar_files.load_bars_bytes(body, "big.csv")


def test_a_file_at_the_row_limit_is_read(monkeypatch):
    monkeypatch.setattr(bar_files, "MAX_ROWS", 30)
    assert len(bar_files.load_bars_bytes(bars_bytes(["AAA"], minutes=30), "ok.csv")) == 30
    with pytest.raises(BarDataError, match=r"ok\.csv: 31 rows; a bar file may hold at most 30 rows"):
        bar_files.load_bars_bytes(bars_bytes(["AAA"], minutes=31), "ok.csv")


def test_a_parquet_file_over_the_row_limit_is_refused_from_its_footer(monkeypatch):
    frame = pd.read_csv(io.BytesIO(bars_bytes(["AAA", "BBB"], minutes=20)))
    buf = io.BytesIO()
    frame.to_parquet(buf)
    monkeypatch.setattr(bar_files, "MAX_ROWS", 39)
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    with pytest.raises(BarDataError, match=r"bars\.parquet: 40 rows; a bar file may hold at most 39 rows"):
        bar_files.load_bars_bytes(buf.getvalue(), "bars.parquet")


def test_a_file_over_the_symbol_limit_is_refused_naming_it_and_the_limit():
    symbols = [f"S{i:04d}" for i in range(bar_files.MAX_SYMBOLS + 1)]
    with pytest.raises(BarDataError, match=r"many\.csv: 201 symbols; a bar file may hold at most 200 symbols"):
        bar_files.load_bars_bytes(bars_bytes(symbols, minutes=1), "many.csv")
    assert len(bar_files.load_bars_bytes(bars_bytes(symbols[:-1], minutes=1), "ok.csv")) == 200


def test_the_file_caption_lists_twenty_symbols_then_how_many_more():
    from ui import research_view

    symbols = [f"S{i:05d}" for i in range(10_000)]
    summary = {"rows": 10_000, "symbols": symbols, "sessions": 1, "first": "2025-03-03", "last": "2025-03-03"}
    text = research_view.file_caption("bars.csv", summary)
    assert len(text) < 400, len(text)  # was 80,059 characters for a 10,000-symbol file
    assert "S00019" in text and "S00020" not in text and "… and 9,980 more" in text and "10,000 symbols" in text
