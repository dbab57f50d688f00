"""Shared by the security tests: a bar file in memory, the Research page under AppTest with its data folder."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.runtime import stop_all

APP = str(Path(__file__).resolve().parents[2] / "app.py")
DAY = date(2025, 3, 3)  # a Monday
TODAY = date(2026, 6, 1)  # the page's "today", fixed


def bars_bytes(symbols: list[str], day: date = DAY, minutes: int = 390) -> bytes:
    rows = []
    times = pd.date_range(f"{day} 09:30", periods=minutes, freq="1min", tz="America/New_York")
    for i, t in enumerate(times):
        for j, s in enumerate(symbols):
            px = 100 + j * 10 + 0.01 * i + (0.5 if i % 7 == 0 else 0)
            rows.append({"timestamp": t.tz_convert("UTC").isoformat(), "symbol": s, "open": px, "high": px + 0.2,
                         "low": px - 0.2, "close": px + 0.05, "volume": 1000 + i})
    return pd.DataFrame(rows).to_csv(index=False).encode()


def research_page(monkeypatch, tmp_path: Path, data_dir: Path) -> AppTest:
    """The Research page on a fresh session, its database in ``tmp_path``, its data folder ``data_dir``."""
    monkeypatch.setattr("ui.research_view.today", lambda: TODAY)
    monkeypatch.setattr("ui.research_view.DATA_DIR", data_dir)
    monkeypatch.setenv("DB_PATH", str(tmp_path / "r.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    st.cache_resource.clear()
    st.cache_data.clear()
    stop_all()
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/research.py").run()
    assert not at.exception, at.exception
    return at


def all_text(at: AppTest) -> str:
    """Everything the page wrote that a reader sees: text elements, tables' cells and columns, widget labels."""
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "text", "code", "exception",
                 "title", "subheader"):
        out += [str(e.value) for e in getattr(at, kind)]
    for d in at.dataframe:
        out += [str(c) for c in d.value.columns] + [str(v) for v in d.value.to_numpy().ravel()]
    for w in at.selectbox:
        out += [str(o) for o in w.options]
    return "\n".join(out)


def one_session_universe(at: AppTest, tier_a: str) -> None:
    """The run's universe: Tier A only, no Tier B, Bench or baskets (a small file has only these symbols)."""
    at.text_input(key="r_tier_a").set_value(tier_a)
    at.text_input(key="r_tier_b").set_value("")
    at.text_input(key="r_bench").set_value("")
    at.text_area(key="r_baskets").set_value("[]")
    at.run()


def stop() -> None:
    st.cache_resource.clear()
    st.cache_data.clear()
    stop_all()
