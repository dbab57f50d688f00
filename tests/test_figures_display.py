"""How figures are shown: score bars by sign, missing figures spelled out, times in CSV files with their zone."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pandas as pd
import pytest

from core import views
from core.metrics.display import NA, NA_ANNUALISED
from core.metrics.figures import MIN_ANNUALISED_SESSIONS
from core.state.store import Store
from ui import charts
from ui.research_view import number_text, saved_list, sweep_table, text_table

# ------------------------------------------------------------------ Live signals: score bars

def test_score_bars_colour_negative_and_positive_scores_apart_and_start_at_zero():
    latest = pd.DataFrame({"symbol": ["NVDA", "TSLA", "AAPL", "MSFT"], "score": [0.52, -0.41, 0.0, None],
                           "cutoff": [0.28, 0.28, 0.35, 0.28]})
    fig = charts.score_bars(latest)
    bars = fig.data[0]
    colours = list(bars.marker.color)
    assert colours[0] != colours[1]  # a negative score is not drawn like a positive one
    assert colours == [charts.GREEN, charts.RED, charts.GREY, charts.GREY]
    # drawn from 0: a bar is as long as its score, so a zero score has no bar (not half of one)
    assert bars.base == 0 and list(bars.x) == [0.52, -0.41, 0.0, 0.0] and list(bars.y) == list(latest["symbol"])
    assert list(bars.text) == ["+0.520", "-0.410", "+0.000", "–"]
    assert tuple(fig.layout.xaxis.range) == (-1.1, 1.1)  # one scale for every ticker and every refresh


def test_score_bars_of_an_empty_table_is_an_empty_chart():
    fig = charts.score_bars(pd.DataFrame())
    assert list(fig.data[0].x) == [] and list(fig.data[0].marker.color) == []


# ------------------------------------------------------------------ missing figures in research tables

@pytest.mark.parametrize("sessions, sharpe_text", [(MIN_ANNUALISED_SESSIONS - 1, NA_ANNUALISED),
                                                   (MIN_ANNUALISED_SESSIONS, NA)])
def test_a_runs_table_says_why_an_annualised_figure_is_missing(sessions, sharpe_text):
    table = pd.DataFrame({"metric": ["total_return", "sharpe", "cagr", "win_rate", "trades"],
                          "run": [0.0123, None, None, None, 0]})
    got = text_table(table, {"run": sessions}).set_index("metric")["run"]
    assert got["sharpe"] == got["cagr"] == sharpe_text  # 20 sessions: missing for another reason, a plain dash
    assert got["win_rate"] == NA and got["trades"] == "0" and got["total_return"] == "1.23%"
    assert NA_ANNUALISED == "n/a (needs ≥ 20 sessions)"


def test_a_comparison_judges_each_run_by_its_own_sessions():
    table = pd.DataFrame({"metric": ["sharpe", "trades"], "month": [1.25, 40], "week": [None, 9],
                          "delta": [None, -31]})
    got = text_table(table, {"month": 21, "week": 5}).set_index("metric")
    assert got.loc["sharpe"].tolist() == ["1.25", NA_ANNUALISED, NA]  # the delta is a difference: just "–"
    assert got.loc["trades"].tolist() == ["40", "9", "-31"]


def test_a_sweep_keeps_its_numbers_and_names_an_annualised_column_without_any():
    rows = pd.DataFrame({"cutoff_delta": [-0.02, 0.0], "sharpe": [None, None], "profit_factor": [None, 1.5]})
    got = sweep_table(rows, 5)
    assert got["sharpe"].tolist() == [NA_ANNUALISED] * 2
    assert got["cutoff_delta"].tolist() == [-0.02, 0.0] and got["profit_factor"].iloc[1] == 1.5  # still numbers
    assert sweep_table(rows.assign(sharpe=[0.4, None]), 25)["sharpe"].iloc[0] == 0.4


def test_the_saved_runs_list_says_n_a_only_for_a_replay():
    table = pd.DataFrame({"id": [3, 2, 1], "name": ["sweep 6 cells", "one day", "a month"],
                          "kind": ["sweep", "replay", "replay"], "total_return": [None, 0.004, 0.02],
                          "sharpe": [None, None, 1.5]})
    got = saved_list(table)
    assert got["sharpe"].tolist() == [NA, NA_ANNUALISED, "1.5"]  # a sweep keeps its figures per cell: none here
    assert got["total_return"].iloc[1] == 0.004


def test_number_text():
    assert [number_text(v) for v in (3, 3.0, 0.0123456789, -1234.567, float("inf"), None, float("nan"))] == \
        ["3", "3", "0.0123457", "-1,234.57", "∞", NA, NA]


# ------------------------------------------------------------------ CSV downloads: times with their zone

def trade(store: Store, entry: datetime, exit_: datetime) -> None:
    store.insert("trades", {"symbol": "NVDA", "kind": "entry", "qty": 2, "entry_ts": entry.isoformat(),
                            "entry_price": 100.0, "exit_ts": exit_.isoformat(), "exit_price": 101.0, "pnl": 2.0,
                            "ret": 0.01, "exit_reason": "take_profit", "mae": 0.0, "mfe": 0.01, "fees": 0.0})


def test_trades_csv_carries_utc_and_the_pages_new_york_time():
    st = Store(":memory:")
    trade(st, datetime(2025, 3, 3, 15, 0, tzinfo=UTC), datetime(2025, 3, 3, 15, 30, 5, tzinfo=UTC))  # EST
    trade(st, datetime(2025, 7, 1, 14, 0, tzinfo=UTC), datetime(2025, 7, 1, 19, 59, tzinfo=UTC))  # EDT
    csv = pd.read_csv(io.BytesIO(views.trades_csv(st)))
    page = views.trades(st)  # what the Trade history page shows: New York wall time
    assert list(csv.columns[4:8]) == ["entry_ts", "entry_ts_ny", "entry_price", "exit_ts"]
    assert "exit_ts_ny" in csv.columns
    for col in ("entry_ts", "exit_ts"):
        utc = pd.to_datetime(csv[col], format="ISO8601")
        ny = pd.to_datetime(csv[f"{col}_ny"], format="ISO8601", utc=True)
        assert all(str(t.tzinfo) == "UTC" for t in utc)  # the UTC column says so (+00:00)
        assert (utc == ny).all()  # the same moments
        # the New York column is what the page shows, with its offset (-05:00 in March, -04:00 in July)
        local = [datetime.fromisoformat(v) for v in csv[f"{col}_ny"]]
        assert [t.strftime("%Y-%m-%d %H:%M:%S") for t in local] == page[col].tolist()
    assert [datetime.fromisoformat(v).utcoffset().total_seconds() / 3600 for v in csv["entry_ts_ny"]] == [-4, -5]


def test_an_empty_trades_csv_has_both_time_columns():
    header = views.trades_csv(Store(":memory:")).decode().splitlines()[0].split(",")
    assert header[4:6] == ["entry_ts", "entry_ts_ny"] and header[7:9] == ["exit_ts", "exit_ts_ny"]



# ------------------------------------------------------------------ issue 27: numbers that read wrong

def test_a_percentage_that_rounds_to_zero_has_no_sign():
    from core.metrics.display import percent

    assert [views.percent(v) for v in (-0.004, -0.0, 0.0, 0.004, -0.006, None)] == ["0%", "0%", "0%", "0%", "-1%",
                                                                                   NA]
    assert percent(-0.00001, 2, signed=True) == "0.00%" and percent(0.0012, 2, signed=True) == "+0.12%"
    assert percent(-0.0012, 2, signed=True) == "-0.12%" and percent(0.185835, 2) == "18.58%"


def test_a_profit_factor_without_a_losing_trade_is_a_dash_as_the_readme_says():
    assert views.factor(float("inf")) == NA and views.factor(None) == NA and views.factor(1.5) == "1.50"


def test_a_grid_value_of_minus_zero_is_shown_as_zero():
    from ui.research_view import _params_text

    delta = round(-0.004, 2)  # float arithmetic near zero ends at -0.0
    assert _params_text({"cutoff_delta": delta, "mixer_cooldown_s": 120}) == "cutoff_delta=0.0, mixer_cooldown_s=120"


def test_research_figures_that_are_fractions_read_as_percentages():
    table = pd.DataFrame({"metric": ["total_return", "max_drawdown", "win_rate", "trades", "expectancy",
                                     "return_per_session"],
                          "run": [0.185835, 0.0123, 0.5, 12, 3.25, -0.00001]})
    got = text_table(table, {"run": 5}).set_index("metric")["run"]
    assert got.to_dict() == {"total_return": "18.58%", "max_drawdown": "1.23%", "win_rate": "50.00%",
                             "trades": "12", "expectancy": "3.25", "return_per_session": "0.00%"}
