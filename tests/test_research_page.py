"""The Research page under AppTest: data, dates and universe checked next to the form, replays saved and
compared, a sweep's heat map redrawn on a new metric, a bar file replayed with its benchmark line."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import load_settings
from core.research import runs
from core.research.replay import grid_cells, parse_sweep, run_replay
from core.runtime import stop_all
from core.state.store import Store

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = date(2025, 3, 3)  # a Monday; the page's "today" is the wall clock, and every date here is in its past
TODAY = date(2026, 6, 1)  # the page's "today" (the wall clock's New York date), fixed for every test here
SOON = TODAY + timedelta(days=60)


def start_app(db: Path) -> AppTest:
    st.cache_resource.clear()
    stop_all()
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/research.py").run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.research_view.today", lambda: TODAY)
    monkeypatch.setenv("DB_PATH", str(tmp_path / "r.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    yield start_app(tmp_path / "r.db")
    st.cache_resource.clear()
    stop_all()


def set_range(at: AppTest, first: date, last: date) -> None:
    at.date_input(key="r_start").set_value(first)
    at.date_input(key="r_end").set_value(last)
    at.run()


def click(at: AppTest, label: str) -> None:
    next(b for b in at.get("form_submit_button") if b.proto.label == label).click().run()
    assert not at.exception, at.exception


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def frame(at: AppTest, kind: str) -> pd.DataFrame:
    """A table of the page by what it holds (AppTest does not expose a dataframe's key)."""
    test = {"metrics": lambda c: c[0] == "metric" and "delta" not in c and "in-sample" not in c,
            "compare": lambda c: "delta" in c, "saved": lambda c: "created_at" in c,
            "sweep": lambda c: "mixer_cooldown_s" in c, "oos": lambda c: "in-sample" in c}[kind]
    return next(d.value for d in at.dataframe if test(list(d.value.columns)))


def num(text: str) -> float:
    """A figure of a run's table (shown as text: ui.research_view.number_text, or a percentage) as a number."""
    if text.endswith("%"):
        return float(text[:-1].replace(",", "")) / 100
    return float(text.replace(",", ""))


def chart(at: AppTest, title_word: str) -> dict:
    """A plotly chart of the page by a word of its title (every spec carries plotly's template, which names
    every trace type, so the spec's text alone does not say which chart it is)."""
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        if title_word in ((spec["layout"].get("title") or {}).get("text") or ""):
            return spec
    raise AssertionError(f"no chart titled with {title_word!r}")


def test_two_replays_are_saved_and_compared_with_the_benchmark(app, tmp_path):
    at = app
    at.number_input(key="r_seed").set_value(3)
    set_range(at, DAY, DAY)
    at.slider(key="r_delta").set_value(-0.05)
    at.text_input(key="r_name").set_value("loose")
    click(at, "Run replay")
    done = texts(at, "success")
    assert any("“loose”" in t and "synthetic market, seed 3" in t and "2025-03-03 … 2025-03-03" in t
               and "cutoff delta -0.05" in t for t in done), done
    # the page's numbers are the engine's: the same replay run here gives the same figures
    ref = run_replay(load_settings(db_path=":memory:", auto_mode=True, cutoff_delta=-0.05, seed=3), days=1, seed=3,
                     start=DAY)
    table = frame(at, "metrics").set_index("metric")
    assert num(table.loc["trades", "loose"]) == ref.stats["metrics"]["trades"]
    bench_cols = [c for c in table.columns if c.startswith("Buy & hold")]
    assert bench_cols and math.isfinite(num(table.loc["total_return", bench_cols[0]]))

    at.slider(key="r_delta").set_value(0.05)
    at.text_input(key="r_name").set_value("tight")
    click(at, "Run replay")
    cmp_ = frame(at, "compare").set_index("metric")
    a, b = cmp_.loc["trades", "loose"], cmp_.loc["trades", "tight"]
    assert num(cmp_.loc["trades", "delta"]) == num(b) - num(a)
    names = {t["name"] for t in chart(at, "Equity")["data"]}
    assert any("loose" in n for n in names) and any("tight" in n for n in names)
    assert any(n.startswith("Buy & hold") for n in names)
    # both are in the app's database, whatever the page shows
    store = Store(str(tmp_path / "r.db"), readonly=True)
    assert sorted(runs.list_runs(store)["name"]) == ["loose", "tight"]
    store.close()


def test_saved_runs_survive_an_app_restart(app, tmp_path):
    at = app
    set_range(at, DAY, DAY)
    at.text_input(key="r_name").set_value("kept")
    click(at, "Run replay")
    at2 = start_app(tmp_path / "r.db")  # a new server process's view: nothing from the old session state
    saved = frame(at2, "saved")
    assert list(saved["name"]) == ["kept"]


def test_replays_store_the_summary_log_unless_every_row_is_asked_for(app, monkeypatch):
    import core.research.replay

    real, asked = core.research.replay.run_replay, []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asked.append(kwargs.get("decisions"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.research.replay, "run_replay", spy)  # the page looks it up in the module on each run
    at = app
    set_range(at, DAY, DAY)
    click(at, "Run replay")
    summary = frame(at, "metrics")
    assert asked == ["summary"]
    # one session: no Sharpe, Sortino or CAGR, for the run and its benchmark, and the table says why
    text = summary.set_index("metric")
    for col in text.columns:
        assert text.loc[["sharpe", "sortino", "cagr"], col].tolist() == ["n/a (needs ≥ 20 sessions)"] * 3, col
    saved = frame(at, "saved")
    assert saved["sharpe"].tolist() == ["n/a (needs ≥ 20 sessions)"]  # the saved-runs list says it too
    box = at.checkbox(key="r_full_decisions")
    assert box.label == "Store every decision row (slower)" and box.value is False
    box.check()
    click(at, "Run replay")
    assert asked[1:] == ["full"]
    full = frame(at, "compare").set_index("metric")
    row = summary.set_index("metric")
    for m in ("trades", "total_return", "max_drawdown"):  # the same figures from either form
        assert full.iloc[:, 1][m] == row.iloc[:, 0][m], m


@pytest.mark.parametrize(("first", "last", "message"), [
    (date(2025, 3, 1), date(2025, 3, 3), "is not a trading day"),  # a Saturday snaps forward, with a note
    (date(2025, 7, 4), date(2025, 7, 7), "is not a trading day"),  # Independence Day
    (SOON, SOON + timedelta(days=4), "in the future"),
    (date(2025, 3, 7), date(2025, 3, 3), "before"),
])
def test_dates_are_checked_next_to_the_form(app, monkeypatch, first, last, message):
    import core.research.replay

    calls = []
    monkeypatch.setattr(core.research.replay, "run_replay", lambda *a, **k: calls.append(1))
    at = app
    set_range(at, first, last)
    shown = texts(at, "info") + texts(at, "error")
    assert any(message in t for t in shown), shown
    if "trading day" in message:  # a note: the run goes ahead on the snapped range
        assert not texts(at, "error")
        return
    click(at, "Run replay")
    assert calls == [] and any("Nothing was run" in t for t in texts(at, "error"))


def test_a_1999_range_replays_the_synthetic_market(app):
    at = app
    set_range(at, date(1999, 6, 1), date(1999, 6, 1))
    click(at, "Run replay")
    assert any("1999-06-01 … 1999-06-01" in t for t in texts(at, "success"))


def bars_csv(path: Path, symbols: list[str], days: list[date], blank_line_at: int | None = None) -> None:
    rows = []
    for d in days:
        for i, t in enumerate(pd.date_range(f"{d} 09:30", f"{d} 15:59", freq="1min", tz="America/New_York")):
            for j, s in enumerate(symbols):
                px = 100 + j * 10 + 0.01 * i + (0.5 if i % 7 == 0 else 0)
                rows.append({"timestamp": t.tz_convert("UTC").isoformat(), "symbol": s, "open": px,
                             "high": px + 0.2, "low": px - 0.2, "close": px + 0.05, "volume": 1000 + i})
    text = pd.DataFrame(rows).to_csv(index=False).splitlines()
    if blank_line_at is not None:
        text.insert(blank_line_at, "")
    path.write_text("\n".join(text) + "\n")


def test_a_bar_file_replays_with_its_own_universe_and_benchmark(app, tmp_path, monkeypatch):
    from ui import research_view

    data = tmp_path / "data"
    data.mkdir()
    bars_csv(data / "mine.csv", ["NVDA", "TSLA", "AAPL", "SQQQ", "XYZ"], [date(2025, 3, 3), date(2025, 3, 4)])
    monkeypatch.setattr(research_view, "DATA_DIR", data)
    at = app
    at.radio(key="r_source").set_value("file").run()
    at.selectbox(key="r_file").set_value("mine.csv").run()  # by its name inside data/
    # the default universe needs MSFT and others the file lacks: refused, naming them
    assert any("no bars for MSFT" in t for t in texts(at, "error")), texts(at, "error")
    at.text_input(key="r_tier_b").set_value("")
    at.text_input(key="r_bench").set_value("")
    at.text_area(key="r_baskets").set_value(json.dumps([{"name": "MEGATECH", "members": ["AAPL", "TSLA"],
                                                         "inverse_etf": "SQQQ", "conflicts": ["QQQ"],
                                                         "index_etf": "QQQ"}]))
    at.run()
    assert not texts(at, "error"), texts(at, "error")
    assert any("XYZ" in c.value and "not replayed" in c.value for c in at.caption)
    assert at.date_input(key="r_start").value == date(2025, 3, 3)  # the file's own span
    click(at, "Run replay")
    assert any("file " in t and "mine.csv" in t for t in texts(at, "success")), texts(at, "success")
    table = frame(at, "metrics").set_index("metric")
    bench = next(c for c in table.columns if c.startswith("Buy & hold"))
    # equal weight of NVDA, TSLA, AAPL bought at the first open, marked at the last close
    f = pd.read_csv(data / "mine.csv")
    first_open = f[f["timestamp"] == f["timestamp"].min()].set_index("symbol")["open"]
    last_close = f[f["timestamp"] == f["timestamp"].max()].set_index("symbol")["close"]
    expect = sum(last_close[s] / first_open[s] for s in ("NVDA", "TSLA", "AAPL")) / 3 - 1
    assert num(table.loc["total_return", bench]) == pytest.approx(expect, abs=5e-5)  # shown as 12.34%


def test_a_malformed_file_shows_its_line_and_runs_nothing(app, tmp_path, monkeypatch):
    from ui import research_view

    data = tmp_path / "data"
    data.mkdir()
    bars_csv(data / "bad.csv", ["NVDA"], [date(2025, 3, 3)], blank_line_at=3)
    lines = (data / "bad.csv").read_text().splitlines()
    lines[9] = lines[9].replace(lines[9].split(",")[2], "abc", 1)  # line 10 of the file: open is not a number
    (data / "bad.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(research_view, "DATA_DIR", data)
    at = app
    at.radio(key="r_source").set_value("file").run()
    at.selectbox(key="r_file").set_value("bad.csv").run()
    assert not at.exception
    msgs = texts(at, "warning")
    assert any("line 10" in m and "open" in m for m in msgs), msgs


def test_alpaca_without_keys_explains_where_they_go(app, monkeypatch):
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)
    at = app
    at.radio(key="r_source").set_value("alpaca").run()
    assert any("secrets.toml" in m for m in texts(at, "warning")), texts(at, "warning")


def test_sweep_heat_map_redraws_on_a_new_metric_without_running_again(app, monkeypatch):
    import core.research.replay

    real, calls = core.research.replay.run_sweep, []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(core.research.replay, "run_sweep", spy)
    at = app
    set_range(at, DAY, DAY)
    at.slider(key="s_delta").set_value((-0.02, 0.02))
    at.selectbox(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([60, 300])
    at.selectbox(key="s_workers").set_value(1)
    click(at, "Run sweep")
    spec = chart(at, "by cutoff delta")
    # cells at positions, labelled with the grid's values (ui/charts.py sweep_heatmap)
    assert spec["layout"]["xaxis"]["ticktext"] == ["-0.02", "+0.00", "+0.02"]
    assert spec["layout"]["yaxis"]["ticktext"] == ["60", "300"] and spec["data"][0]["y"] == [0, 1]
    table = frame(at, "sweep")
    assert len(table) == 6 and set(table["cutoff_delta"]) == {-0.02, 0.0, 0.02}
    assert chart(at, "by cutoff delta")["layout"]["title"]["text"].startswith("total_return")
    at.selectbox(key="s_metric").set_value("trades").run()
    assert chart(at, "by cutoff delta")["layout"]["title"]["text"].startswith("trades")
    # a one-session sweep has no Sharpe in any cell: the page says so instead of drawing a map of nothing
    at.selectbox(key="s_metric").set_value("sharpe").run()
    with pytest.raises(AssertionError, match="no chart"):
        chart(at, "by cutoff delta")
    assert any("sharpe: n/a (needs ≥ 20 sessions) in every cell" in i.value and "1 session)" in i.value
               for i in at.info), [i.value for i in at.info]
    assert frame(at, "sweep")["sharpe"].tolist() == ["n/a (needs ≥ 20 sessions)"] * 6
    assert calls == [1]


def test_parse_sweep_ranges_and_lists():
    g = parse_sweep(["cutoff_delta=-0.05:0.05:0.05", "cooldown=60,120"])
    assert g == {"cutoff_delta": [-0.05, 0.0, 0.05], "mixer_cooldown_s": [60, 120]}
    assert len(grid_cells(g)) == 6
    for bad in (["x"], ["a=1:0:1"], ["a=1:2:0"], ["a=1", "b=2", "c=3"]):
        with pytest.raises(ValueError):
            parse_sweep(bad)


def test_more_than_five_years_is_refused_with_the_clis_message(app, capsys):
    """One limit (core.research.ranges.MAX_SESSIONS) for the page and the CLI, in the same words; five years
    run (a year and more was refused until the feed cache and the measured memory made room)."""
    from core.clock import trading_sessions
    from core.research import ranges
    from core.research.__main__ import main

    at = app
    over = trading_sessions(date(2019, 1, 2), ranges.MAX_SESSIONS + 1)
    set_range(at, over[0], over[-1])
    message = f"2019-01-02..{over[-1]} has 1261 sessions, more than the 1260 a run takes"
    assert message in texts(at, "error"), texts(at, "error")
    assert main(["--start", "2019-01-02", "--end", str(over[-1])], today=TODAY) == 2
    assert capsys.readouterr().err.strip() == f"error: --start 2019-01-02 --end {over[-1]}: {message}"
    set_range(at, over[0], over[-2])  # exactly the limit: accepted
    assert not any("sessions, more than" in t for t in texts(at, "error")), texts(at, "error")
    assert f"{ranges.MAX_SESSIONS} sessions: 2019-01-02 … {over[-2]}" in [c.value for c in at.caption]


def test_the_out_of_sample_check_shows_both_parts_and_is_kept(app, tmp_path):
    at = app
    set_range(at, date(2025, 3, 3), date(2025, 3, 7))  # 5 sessions: 4 in-sample (70 % rounded), 1 out-of-sample
    at.slider(key="s_delta").set_value((-0.02, 0.02))
    at.selectbox(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([180])
    at.selectbox(key="s_workers").set_value(1)
    at.selectbox(key="s_pick").set_value("total_return")
    click(at, "Run out-of-sample check")
    heads = [m.value for m in at.markdown if m.value.startswith("**Fold 1**")]
    assert heads and "in-sample 2025-03-03 … 2025-03-06 (4 sessions)" in heads[0]
    assert "out-of-sample 2025-03-07 … 2025-03-07 (1 session)" in heads[0]
    table = frame(at, "oos").set_index("metric")
    store = Store(str(tmp_path / "r.db"), readonly=True)
    [run] = [runs.load_run(store, int(i)) for i in runs.list_runs(store)["id"]]
    store.close()
    fold = run["detail"]["folds"][0]
    assert run["kind"] == "walk_forward"
    assert num(table.loc["trades", "in-sample"]) == fold["in_sample"]["metrics"]["trades"]
    assert num(table.loc["trades", "out-of-sample"]) == fold["out_of_sample"]["metrics"]["trades"]
    assert table.loc["sharpe", "in-sample"] == "n/a (needs ≥ 20 sessions)"  # 4 sessions
    # the best cell is the in-sample grid's best by the chosen figure
    best = max(fold["in_sample"]["grid"], key=lambda r: r["total_return"])
    assert fold["in_sample"]["best"]["cutoff_delta"] == best["cutoff_delta"]


def test_alpaca_history_downloads_once_and_replays_from_the_cache(tmp_path, monkeypatch):
    """The real alpaca-py client against the Alpaca-shaped server on 127.0.0.1: the first run downloads the
    range (with warm-up days) into the Parquet cache, the second asks the server nothing."""

    from core.clock import NY, UTC
    from core.universe import DEFAULT_UNIVERSE
    from core.venues.sim.bar_files import ReplayMarket
    from core.venues.sim.synthetic import SyntheticMarket
    from tests.fakes.alpaca_server import FakeAlpaca

    key, secret = "PKRESEARCHPAGE12345", "SECRETRESEARCHPAGE987654"
    bars = SyntheticMarket(5, anchor=date(2025, 2, 26)).frame_for_sessions(8)  # warm-up days, then 03-03..07
    with FakeAlpaca(ReplayMarket(bars), universe_symbols=list(DEFAULT_UNIVERSE.all_symbols), api_key=key,
                    secret_key=secret, rate_limit_per_min=1_000_000) as fake:
        fake.set_time(datetime(2025, 3, 10, 10, 0, tzinfo=NY).astimezone(UTC))
        for name, value in {"DB_PATH": str(tmp_path / "r.db"), "ENGINE_JOBS": "0", "ALPACA_API_KEY": key,
                            "ALPACA_SECRET_KEY": secret, "ALPACA_DATA_URL": fake.url,
                            "ALPACA_CACHE_DIR": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("ui.research_view.today", lambda: TODAY)
        at = start_app(tmp_path / "r.db")
        try:
            at.radio(key="r_source").set_value("alpaca").run()
            set_range(at, date(2025, 3, 3), date(2025, 3, 4))
            assert any("0 of 2 days cached" in c.value for c in at.caption), [c.value for c in at.caption]
            click(at, "Run replay")
            assert any("Alpaca history (iex feed), 2025-03-03 … 2025-03-04" in t for t in texts(at, "success")), \
                texts(at, "success") + texts(at, "error")
            asked = fake.count("GET", "/v2/stocks/bars")
            assert asked >= 5  # 2 days and 3 warm-up days, one request or more each
            first = frame(at, "metrics").set_index("metric")
            at.run()
            assert any("All 2 days are in the local cache" in c.value for c in at.caption)
            click(at, "Run replay")
            assert fake.count("GET", "/v2/stocks/bars") == asked  # counted by the server: nothing asked again
            again = frame(at, "compare").set_index("metric")
            assert again.iloc[:, 0]["trades"] == again.iloc[:, 1]["trades"] == first.iloc[:, 0]["trades"]
        finally:
            st.cache_resource.clear()
            stop_all()


def test_a_saved_run_is_renamed_and_deleted_from_the_page(app, tmp_path):
    at = app
    set_range(at, DAY, DAY)
    at.text_input(key="r_name").set_value("first try")
    click(at, "Run replay")
    [run_id] = list(frame(at, "saved")["id"])
    at.text_input(key=f"r_rename_{run_id}").set_value("keeper")
    at.button(key=f"r_rename_go_{run_id}").click().run()
    assert list(frame(at, "saved")["name"]) == ["keeper"]
    assert at.button(key=f"r_del_{run_id}").disabled  # Delete needs the confirmation ticked first
    at.checkbox(key=f"r_del_sure_{run_id}").check().run()
    at.button(key=f"r_del_{run_id}").click().run()
    assert not at.exception
    store = Store(str(tmp_path / "r.db"), readonly=True)
    assert runs.list_runs(store).empty
    store.close()
    assert any("No saved runs yet" in c.value for c in at.caption)


# ---------------------------------------------------------------- issue 27
def test_a_seven_session_file_starts_from_its_own_first_session(app, tmp_path, monkeypatch):
    from core.clock import trading_sessions
    from ui import research_view

    data = tmp_path / "data"
    data.mkdir()
    days = trading_sessions(date(2025, 3, 3), 7)
    bars_csv(data / "week.csv", ["NVDA"], days)
    monkeypatch.setattr(research_view, "DATA_DIR", data)
    at = app
    at.radio(key="r_source").set_value("file").run()
    at.selectbox(key="r_file").set_value("week.csv").run()
    assert at.date_input(key="r_start").value == days[0] and at.date_input(key="r_end").value == days[-1]
    assert "7 sessions: 2025-03-03 … 2025-03-11" in [c.value for c in at.caption]


def test_a_cancelled_sweep_says_so_on_the_next_render(app, monkeypatch):
    import core.research.replay

    def ended_by_a_click(*_args, progress=None, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        progress(2, 4)
        st.stop()  # what a click does to a running script: it ends where it is, no line after the call runs

    monkeypatch.setattr(core.research.replay, "run_sweep", ended_by_a_click)
    at = app
    set_range(at, DAY, DAY)
    at.slider(key="s_delta").set_value((-0.02, 0.0))
    at.selectbox(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([60, 300])
    click(at, "Run sweep")
    at.run()  # the render after the click
    assert "The sweep was cancelled after 2 of 4 cells: nothing of it was saved." in texts(at, "warning")
    at.run()
    assert not any("cancelled" in w for w in texts(at, "warning"))  # said once


def test_research_figures_read_as_percentages_and_trades_in_new_york_time(app):
    at = app
    at.number_input(key="r_seed").set_value(3)
    set_range(at, DAY, DAY)
    at.slider(key="r_delta").set_value(-0.05)
    click(at, "Run replay")
    table = frame(at, "metrics").set_index("metric")
    for m in ("total_return", "max_drawdown", "exposure"):
        assert table.iloc[:, 0][m].endswith("%") and "-0.00%" not in table.iloc[:, 0][m], (m, table.iloc[:, 0][m])
    trades = next(d.value for d in at.dataframe if "entry_ts" in d.value.columns)
    assert len(trades) > 0
    for col in ("entry_ts", "exit_ts"):  # wall time of the 2025-03-03 session in New York, as the charts
        hours = pd.to_datetime(trades[col]).dt.strftime("%H:%M")
        assert trades[col].str.startswith("2025-03-03 ").all() and ((hours >= "09:30") & (hours <= "16:00")).all()
