"""Research: replay a date range of synthetic, Alpaca or file bars with chosen parameters, keep every run,
compare two, sweep a grid and check the best cell out of sample, search any settings with Optuna, and read the
odds that a best result is luck (PBO, deflated Sharpe).

Runs use the same Engine as live trading, on a SimClock and the simulated broker, in an in-memory database;
nothing here touches the live engine. Every run is saved to ``research_runs`` in the app's database. Clicking
anything while a run is in progress stops it (Streamlit ends the running script, and a sweep's worker
processes are terminated); "Cancel" is that click.
"""

from datetime import date, timedelta

import streamlit as st

from core import views
from core.bounds import BY_SETTING
from core.clock import previous_session, sessions_between
from core.config import ConfigError, load_settings
from core.research import ranges, runs, sources
from core.research.replay import grid_cells
from core.venues.marketdata import BarDataError
from ui import bounded
from ui import research_view as rv
from ui import search_view as sv
from ui.state import load_context
from ui.text import plain

ctx = load_context()
st.title("Research")
live = views.live_params(ctx.store)
settings = ctx.settings
TODAY = rv.today()  # what "the future" means for history: the wall clock, not a sim clock

# ---------------------------------------------------------------- 1. data
st.subheader("1. Data")
kind = st.radio("Bars to replay", list(rv.SOURCE_LABELS), format_func=rv.SOURCE_LABELS.get, horizontal=True,
                key="r_source")
problems: list[str] = []  # anything here disables Run, shown next to the form
frame = None  # the bars of a file (validated), or None
feed_name = "iex"
if kind == "synthetic":
    seed = st.number_input("Synthetic market seed", min_value=0, value=7, step=1, key="r_seed")
    source = sources.DataSource("synthetic", seed=int(seed))
elif kind == "alpaca":
    seed = 0
    feed_name = st.selectbox("Feed", ["iex", "sip"], key="r_feed",
                             help="iex is free; sip (every exchange) needs a paid data plan for recent days")
    source = sources.DataSource("alpaca", feed=feed_name)
    if not rv.has_alpaca_keys(settings):
        problems.append("Alpaca history needs your API keys. Add them to `.streamlit/secrets.toml` "
                        "(`ALPACA_API_KEY = \"PK...\"` and `ALPACA_SECRET_KEY = \"...\"`, a paper account's keys "
                        "are enough) or to `.env`, then reload the page. Cached days need no keys for display only.")
else:
    seed = 0
    file_name = file_label = None
    uploaded = st.file_uploader("Upload bars (CSV or Parquet: timestamp, symbol, open, high, low, close, volume)",
                                type=["csv", "parquet", "pq"], key="r_upload")
    local = rv.data_files()
    picked = st.selectbox("…or choose a file under data/", ["(none)", *local], key="r_file")
    try:
        if uploaded is not None:  # kept as data/uploads/<hash>: the browser's name for it is only shown
            file_name, file_label, frame = rv.load_upload(uploaded.getvalue(), uploaded.name)
        elif picked != "(none)":
            frame = rv.load_path(picked)  # resolved inside data/, else refused unread
            file_name = file_label = picked
        else:
            problems.append("Upload a bar file or choose one under data/.")
    except BarDataError as e:
        problems.append(f"The file was refused: {plain(e)}")
        st.error(f"The file was refused: {plain(e)}")
    source = sources.DataSource("file", file_name=file_name, label=file_label) if frame is not None else None
    if frame is not None:
        st.caption(rv.file_caption(file_label, rv.summarize(frame)))

# ---------------------------------------------------------------- 2. dates
st.subheader("2. Dates")
data_sessions = rv.frame_sessions(frame) if frame is not None else None
default_end = data_sessions[-1] if data_sessions else previous_session(TODAY)
# a file: its own span (up to the most a run takes); a market: the last five sessions, a first run of seconds
default_start = data_sessions[-ranges.MAX_SESSIONS:][0] if data_sessions else sessions_between(
    default_end - timedelta(days=14), default_end)[-5]
# a one-session file too (a slice step of len - 1 was 0 there)
data_key = (source.file_name, data_sessions[0], data_sessions[-1]) if frame is not None else "market"
if st.session_state.get("_r_data_key") != data_key:  # new data: start from its own span, not the last one's
    st.session_state["_r_data_key"] = data_key
    st.session_state.pop("r_done", None)  # the last run's note belongs to the last data
    st.session_state["r_start"], st.session_state["r_end"] = default_start, default_end
c = st.columns(2)
start = c[0].date_input("From", min_value=date(1990, 1, 1), max_value=date(2035, 12, 31),
                        key="r_start", format="YYYY-MM-DD")
end = c[1].date_input("To (inclusive)", min_value=date(1990, 1, 1),
                      max_value=date(2035, 12, 31), key="r_end", format="YYYY-MM-DD")
sessions: list[date] = []
try:
    sessions, notes = ranges.resolve_range(start, end, today=TODAY, data_sessions=data_sessions,
                                           max_sessions=ranges.MAX_SESSIONS)
    for n in notes:
        st.info(n)
    st.caption(f"{len(sessions)} sessions: {sessions[0]} … {sessions[-1]}")
except ranges.RangeError as e:
    problems.append(str(e))
    st.error(str(e))

# ---------------------------------------------------------------- 3. universe
st.subheader("3. Universe")
with st.expander("Tiers and baskets for this run (default: the live settings)", expanded=frame is not None):
    c = st.columns(3)
    tier_a = c[0].text_input("Tier A", settings.tier_a_tickers, key="r_tier_a")
    tier_b = c[1].text_input("Tier B", settings.tier_b_tickers, key="r_tier_b")
    bench = c[2].text_input("Bench", settings.bench_tickers, key="r_bench")
    baskets_json = st.text_area("Baskets (JSON; [] for none)", settings.baskets_json, key="r_baskets", height=110)
universe_set = sources.universe_overrides(tier_a, tier_b, bench, baskets_json)
run_settings = None
try:
    run_settings = load_settings(**rv.base_overrides(universe_set, source))
    if frame is not None:
        unused = sources.check_universe(run_settings.universe, rv.frame_symbols(frame))
        if unused:
            st.caption(f"In the file but in no tier or basket of this run (not replayed): {rv.symbols_text(unused)}")
except (ConfigError, sources.UniverseError) as e:
    problems.append(f"Universe: {plain(e)}")
    st.error(f"Universe: {plain(e)}")
if run_settings is not None:
    st.caption(rv.universe_line(run_settings.universe))
    if kind == "alpaca" and sessions and rv.has_alpaca_keys(run_settings):
        st.caption(rv.alpaca_cache_note(run_settings, feed_name, list(run_settings.universe.all_symbols),
                                        sessions[0], sessions[-1]))

# ---------------------------------------------------------------- 4. replay
st.subheader("4. Replay")
with st.form("research_form"):
    c = st.columns(2)
    # ranges and steps: core/bounds.py, the sidebar's and the engine's own
    delta = bounded.slider(c[0], BY_SETTING["cutoff_delta"], live.get("cutoff_delta", settings.cutoff_delta),
                           key="r_delta")
    cooldown = bounded.slider(c[1], BY_SETTING["mixer_cooldown_s"], live.get("cooldown_s", settings.mixer_cooldown_s),
                              key="r_cooldown")
    name = st.text_input("Name of this run (optional)", key="r_name", max_chars=80,
                         placeholder=f"e.g. cutoff {delta:+.2f}, cooldown {cooldown} s")
    full_rows = st.checkbox(
        "Store every decision row (slower)", value=False, key="r_full_decisions",
        help="By default a run counts the decisions that never passed the cutoff per ticker and minute instead of "
             "storing each one; the figures are the same. Tick this to keep one row per decision, as live trading.")
    run = st.form_submit_button("Run replay", type="primary")
for p in problems:
    st.warning(p)

rv.show_cancelled("replay")
if run and not problems and source is not None and run_settings is not None:
    rv.mark_running("replay", "The replay", "ticks")
    params = {"cutoff_delta": round(float(delta), 4) + 0.0, "mixer_cooldown_s": int(cooldown), **universe_set}
    label = name.strip() or f"cutoff {delta:+.2f}, cooldown {cooldown} s"
    bar = st.progress(0.0, text="starting")
    cancel = st.empty()
    cancel.button("Cancel", key="r_cancel", help="Stops the run at once; nothing of it is saved")
    try:
        market = rv.prepare_market(source, frame, settings, run_settings, sessions, TODAY, bar)
        run_id, used = rv.replay_and_save(settings.db_path, label, source, params, sessions, market, bar,
                                          decisions="full" if full_rows else "summary")
        opened = [run_id] + [i for i in st.session_state.get("r_open", []) if i != run_id][:1]
        st.session_state["r_open"] = opened
        st.session_state["r_done"] = f"Saved run #{run_id} “{plain(label)}”: {used}"
    except (ConfigError, BarDataError, ValueError, RuntimeError) as e:
        st.error(f"Cannot run: {plain(e)}")
    rv.mark_done("replay")
    bar.empty()
    cancel.empty()
elif run:
    st.error("Nothing was run: fix the problems above first.")
if st.session_state.get("r_done"):
    st.success(st.session_state["r_done"])

# ---------------------------------------------------------------- 5. saved runs
st.subheader("5. Saved runs")
saved = runs.list_runs(ctx.store)
if saved.empty:
    st.caption("No saved runs yet: every replay, sweep and out-of-sample check is kept here.")
else:
    ids = [int(i) for i in saved["id"]]
    st.session_state["r_open"] = [i for i in st.session_state.get("r_open", ids[:1]) if i in ids]
    listed = rv.saved_list(rv.saved_table(saved))
    st.dataframe(listed, hide_index=True, key="r_saved", placeholder="–", column_config=rv.percent_columns(listed))
    open_ids = st.multiselect("Open (pick two to compare)", ids, key="r_open", max_selections=2,
                              format_func=lambda i: rv.run_label(saved, i))
    opened = [runs.load_run(ctx.store, i) for i in open_ids]
    rv.show_runs(opened)
    if opened:
        rv.manage_run(settings.db_path, opened[0])
        rv.apply_to_live(ctx, opened[0], live)
        if opened[0]["kind"] == "search":
            sv.apply_search_to_live(ctx, {**opened[0]["detail"], "id": opened[0]["id"]}, live,
                                    key=f"q_saved_{opened[0]['id']}")

# ---------------------------------------------------------------- 6. sweep and out-of-sample check
st.divider()
st.subheader("6. Parameter sweep and out-of-sample check")
st.caption("Uses the data, dates and universe chosen above.")
cluster_status = rv.sweep_where(settings)  # None: no DASK_SCHEDULER, sweeps run here
run_on = None
if cluster_status is None:
    st.caption("Sweeps run here, in the processes chosen below (DASK_SCHEDULER sends them to a Dask cluster).")
else:
    if cluster_status.error:
        st.error(f"Dask cluster: {cluster_status.error} Sweeps can still run here.")
        st.button("Check the cluster again", key="s_recheck", on_click=rv.recheck_cluster)
    else:
        st.caption(f"Sweeps can run {cluster_status.describe()}.")
    where = st.radio("Run sweeps", ["cluster", "here"], index=1 if cluster_status.error else 0, horizontal=True,
                     key="s_where", format_func={"cluster": f"on the Dask cluster ({settings.dask_scheduler})",
                                                 "here": "here, in local processes"}.get)
    run_on = settings.dask_scheduler if where == "cluster" else None
with st.form("sweep_form"):
    c = st.columns(3)
    b_delta = BY_SETTING["cutoff_delta"]
    d_lo, d_hi = c[0].slider("Cutoff delta range", b_delta.lo, b_delta.hi, (-0.04, 0.04), b_delta.step,
                             format=b_delta.fmt, key="s_delta")
    d_step = c[1].selectbox("Delta step", [round(b_delta.step * k, 10) for k in (1, 2, 5)], index=1, key="s_step")
    cooldowns = c[2].multiselect("Cooldowns (s)", list(BY_SETTING["mixer_cooldown_s"].sweep_values),
                                 default=[60, 180, 300], key="s_cooldowns")
    c = st.columns(3)
    workers = c[0].selectbox("Processes (run here)", [1, 2, 3, 4], index=1, key="s_workers")
    split = c[1].selectbox("Out-of-sample split", ["70 / 30", "walk-forward, 2 folds", "walk-forward, 3 folds",
                                                    "walk-forward, 4 folds"], key="s_split")
    pick = c[2].selectbox("Best cell by", ["total_return", "sharpe", "profit_factor", "expectancy"], key="s_pick")
    more = st.text_area("More parameters (optional): one per line, NAME=start:stop:step or NAME=v1,v2", key="s_more",
                        height=80, placeholder="risk_per_trade=0.005,0.01\nstop_loss_pct=0.01:0.03:0.01",
                        help="Any numeric setting. The heat map shows two of them; cells a settings rule refuses "
                             "(e.g. MAX_CONCURRENT_RISK below RISK_PER_TRADE) are listed, not run.")
    go_sweep = st.form_submit_button("Run sweep")
    go_oos = st.form_submit_button("Run out-of-sample check")
rv.show_cancelled("sweep")
if (go_sweep or go_oos) and (problems or source is None or run_settings is None):
    st.error("Nothing was run: fix the problems above first.")
elif go_sweep or go_oos:
    n = int(round((d_hi - d_lo) / d_step)) + 1
    grid = {"cutoff_delta": [round(d_lo + i * d_step, 4) + 0.0 for i in range(n)],  # + 0.0: never -0.0
            "mixer_cooldown_s": sorted(int(x) for x in cooldowns) or [int(live.get("cooldown_s", 180))]}
    rv.mark_running("sweep", *(("The sweep", "cells") if go_sweep else ("The out-of-sample check", "steps")))
    bar = st.progress(0.0, text="starting")
    cancel = st.empty()
    cancel.button("Cancel", key="s_cancel", help="Stops the sweep and its worker processes (or cluster tasks) at once")
    try:
        grid = rv.sweep_grid(grid, more)
        bar.progress(0.0, text=f"0/{len(grid_cells(grid))} cells")
        market = rv.prepare_market(source, frame, settings, run_settings, sessions, TODAY, bar)
        if go_sweep:
            st.session_state["s_result"] = rv.sweep_and_save(settings.db_path, source, universe_set, grid, sessions,
                                                             market, int(workers), bar, cluster=run_on)
        else:
            folds = 1 if split.startswith("70") else int(split.split(",")[1].split()[0])
            st.session_state["s_oos"] = rv.walk_forward_and_save(settings.db_path, source, universe_set, grid,
                                                                 sessions, market, int(workers), folds, pick, bar,
                                                                 cluster=run_on)
    except (ConfigError, BarDataError, ValueError, RuntimeError) as e:
        st.error(f"Cannot run: {plain(e)}")
    rv.mark_done("sweep")
    bar.empty()
    cancel.empty()

sweep = st.session_state.get("s_result")
if sweep:
    metric = st.selectbox("Heat map metric", rv.METRICS, key="s_metric")  # outside the form: redraws at once
    rv.show_sweep(sweep, metric)
oos = st.session_state.get("s_oos")
if oos:
    rv.show_walk_forward(oos)

# ---------------------------------------------------------------- 7. search
st.divider()
st.subheader("7. Search (Optuna)")
st.caption("Uses the data, dates and universe chosen above, and runs where sweeps run. Each trial is a sweep cell; "
           "the study is kept in the app's database, so running it again with the same name continues it.")
with st.form("search_form"):
    space_text = st.text_area("Settings to search: one per line, NAME=LOW:HIGH, optionally :log or :int",
                              "cutoff_delta=-0.10:0.10\nmixer_cooldown_s=60:600", key="q_space", height=80,
                              help="Any numeric setting; each range is checked against the setting's own rule.")
    c = st.columns(4)
    n_trials = c[0].number_input("Trials to add", min_value=1, max_value=2000, value=20, step=1, key="q_trials")
    q_metric = c[1].selectbox("Maximise", ["total_return", "sharpe", "sortino", "profit_factor", "expectancy",
                                           "max_drawdown"], key="q_metric",
                              help="max_drawdown is minimised; annualised figures need ≥ 20 sessions")
    q_workers = c[2].selectbox("Processes (run here)", [1, 2, 3, 4], index=1, key="q_workers")
    study_name = c[3].text_input("Study name (optional)", key="q_study", max_chars=80,
                                 placeholder="made from the inputs")
    q_prune = st.checkbox("Prune trials clearly behind after the first third of the range", value=True, key="q_prune")
    go_search = st.form_submit_button("Run search")
sv.show_search_cancelled()
if go_search and (problems or source is None or run_settings is None):
    st.error("Nothing was run: fix the problems above first.")
elif go_search:
    rv.mark_running("search", "The search", "trials")
    bar = st.progress(0.0, text="starting")
    cancel = st.empty()
    cancel.button("Cancel", key="q_cancel", help="Stops the search; the finished trials stay in its study")
    try:
        market = rv.prepare_market(source, frame, settings, run_settings, sessions, TODAY, bar)
        st.session_state["q_result"] = sv.search_and_save(settings.db_path, source, universe_set, space_text,
                                                          int(n_trials), q_metric, study_name, sessions, market,
                                                          int(q_workers), q_prune, bar, cluster=run_on)
    except (ConfigError, BarDataError, ValueError, RuntimeError) as e:
        st.error(f"Cannot run: {plain(e)}")
    rv.mark_done("search")
    bar.empty()
    cancel.empty()
found = st.session_state.get("q_result")
if found:
    sv.show_search(found)
    sv.apply_search_to_live(ctx, found, live, key=f"q_{found['id']}")
