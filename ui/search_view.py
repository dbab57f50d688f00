"""The Research page's search (Optuna) and the odds that a best result is luck: running and saving a search,
its plots, the PBO / deflated Sharpe verdict of a search or a sweep, and "Apply to live" of a search's chosen
setting. Streamlit lives here; the search and the statistics are in core.research (search, overfitting)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.bounds import BY_SETTING
from core.research import overfitting, runs, search, sources
from ui import charts
from ui import research_view as rv
from ui.state import AppContext
from ui.text import plain

DOC = Path(__file__).resolve().parents[1] / overfitting.EXPLAINED  # the short explanation the verdict links to
HEAT_BINS = 8  # a search's trials fall anywhere in a range: the heat map groups each parameter into this many bins


# ---------------------------------------------------------------- running
def search_and_save(db_path: str, source: sources.DataSource, universe_set: dict[str, str], space_text: str,
                    n_trials: int, metric: str, study_name: str, sessions: list[date], market: Any, workers: int,
                    prune: bool, bar: Any, *, cluster: str | None = None) -> dict[str, Any]:
    """Add ``n_trials`` trials to the study (new, or continued when its name and inputs match) and keep the
    result as a saved run of kind ``search``."""
    space = search.parse_space([ln.strip() for ln in space_text.splitlines() if ln.strip()], option="Search space")
    base = rv.base_overrides(universe_set, source)
    rv.prepare_research_engine()
    bar.progress(0.0, text=f"0/{n_trials} trials")

    def progress(p: search.SearchProgress) -> None:
        bar.progress(min(1.0, p.done / max(p.total, 1)), text=f"search: {plain(p.text())}")
        rv.note_progress(p.done, p.total)

    with rv._cluster_errors():
        out = search.run_search(base, space, n_trials=n_trials, metric=metric, sessions=sessions, seed=source.seed,
                                db_path=db_path, study_name=study_name.strip() or None, market=market,
                                source=source.as_dict(), workers=workers, cluster=cluster, prune=prune,
                                progress=progress)
    src = source.run_source(sessions)
    name = f"search {out['study']}: {out['tried']} trials, {sessions[0]} … {sessions[-1]}"
    best_row = (out["best"] or {}).get("row") or {}
    run_id = rv._save(db_path, lambda w: runs.save_run(
        w, name=name[:runs.NAME_MAX], kind="search", source=src,
        params={"space": [d.text() for d in space.values()], "metric": metric, **universe_set},
        metrics={k: v for k, v in best_row.items() if k not in space}, detail=out, created_at=datetime.now(UTC)))
    return {**out, "id": run_id, "used": f"{plain(source.describe())}, {sessions[0]} … {sessions[-1]} "
                                          f"({len(sessions)} sessions)"}


def show_search_cancelled() -> None:
    """A search a click ended: what ran is kept in its study (unlike a sweep, nothing of which is kept)."""
    r = st.session_state.get(rv._RUNNING, {}).pop("search", None)
    if r is None:
        return
    st.warning(f"The search was cancelled after {r['done']:,} of {r['total']:,} trials. The finished trials are "
               f"kept in its study: run the search again with the same study name and inputs to continue it.")


# ---------------------------------------------------------------- the verdict
def show_odds(odds: dict[str, Any], *, key: str, chosen: str = "") -> None:
    """The verdict beside the chosen setting, the figures behind it and the logit histogram."""
    if not odds:
        return
    text = odds.get("verdict") or overfitting.verdict(odds.get("pbo"), odds.get("dsr"))
    pbo = odds.get("pbo")
    (st.error if pbo is not None and pbo > 0.5 else st.warning if pbo is None or pbo >= 0.2 else st.success)(
        f"{chosen}{plain(text)}.")
    with st.expander(f"What PBO and the deflated Sharpe ratio mean ({overfitting.EXPLAINED})"):
        st.markdown(explanation())
    parts = [f"{odds.get('trials', 0)} trials over {odds.get('sessions', 0)} sessions"]
    parts.append(f"PBO from {odds['blocks']} blocks ({len(odds.get('logits') or [])} combinations)"
                 if odds.get("blocks") else f"no PBO: {odds.get('why_no_pbo')}")
    if odds.get("dsr") is not None:
        parts.append(f"deflated Sharpe {odds['dsr']:.2f} (Sharpe per session {odds['sharpe']:.3f} against "
                     f"{odds['expected_max_sharpe']:.3f} expected from luck alone)")
    else:
        parts.append(f"no deflated Sharpe: {odds.get('why_no_dsr')}")
    st.caption("; ".join(parts))
    if odds.get("logits"):
        st.plotly_chart(logit_histogram(odds["logits"], pbo), theme=None, key=f"{key}_logits")


@st.cache_data
def explanation() -> str:
    """docs/overfitting.md, shown where the verdict is (the page cannot link to a file of the checkout)."""
    try:
        return DOC.read_text(encoding="utf-8")
    except OSError:
        return f"See {overfitting.EXPLAINED} in the project."


def logit_histogram(logits: list[float], pbo: float | None) -> go.Figure:
    """The distribution of λ (the in-sample best's relative rank out of sample, as a logit): mass left of 0 is
    the PBO."""
    lam = np.asarray(logits, dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=lam[lam <= 0], name="at or below the median (overfit)", marker_color=charts.RED,
                               xbins={"size": 0.25}))
    fig.add_trace(go.Histogram(x=lam[lam > 0], name="above the median", marker_color=charts.GREEN,
                               xbins={"size": 0.25}))
    fig.add_vline(x=0, line_dash="dot")
    title = "Out-of-sample rank of the in-sample best (logit)" + (f": PBO {pbo:.2f}" if pbo is not None else "")
    fig.update_layout(title=title, barmode="overlay", height=300, xaxis_title="λ = logit of the relative rank",
                      yaxis_title="combinations", legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"})
    return fig


# ---------------------------------------------------------------- a search's plots
def _trials_frame(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for t in result.get("trials") or []:
        rows.append({"trial": t["number"], "state": t["state"], **t["params"], "value": t["value"]})
    return pd.DataFrame(rows)


def show_search(result: dict[str, Any], *, key: str = "q") -> None:
    """A search: its verdict beside the chosen setting, best figure over trials, importances, a slice per
    parameter, the heat map of the two most important parameters and every trial."""
    metric = result.get("metric", "total_return")
    st.caption(f"Search #{result.get('id', '–')} (study “{plain(result['study'])}”)"
               + (f": {result['used']}" if result.get("used") else "")
               + (f", run {result['where']}" if result.get("where") else ""))
    best = result.get("best")
    df = _trials_frame(result)
    if best is None or df.empty:
        st.info("No trial of this search has finished with a value yet.")
        return
    chosen = ", ".join(f"{k}={_num(v)}" for k, v in best["params"].items())
    st.markdown(f"**Chosen setting** (trial {best['number']}): {chosen}; {metric} {_num(best['value'])}")
    show_odds(result.get("odds") or {}, key=f"{key}_odds")
    params = [c for c in df.columns if c not in ("trial", "state", "value")]
    done = df[df["state"] == "complete"]
    c = st.columns(2)
    c[0].plotly_chart(history_chart(df, metric, result.get("direction") == "minimize"), theme=None,
                      key=f"{key}_history")
    imp = result.get("importances") or {}
    c[1].plotly_chart(importance_chart(imp), theme=None, key=f"{key}_importance")
    for i, p in enumerate(params):
        if i % 2 == 0:
            row = st.columns(2)
        row[i % 2].plotly_chart(slice_chart(done, p, metric), theme=None, key=f"{key}_slice_{p}")
    top = sorted(params, key=lambda p: -imp.get(p, 0.0))[:2]
    if len(top) == 2 and len(done) >= 2:
        pivot = binned_pivot(done, top[0], top[1])
        st.plotly_chart(charts.sweep_heatmap_axes(pivot, metric, top[0], top[1],
                                                  f"the best trial in each bin of {HEAT_BINS} × {HEAT_BINS}"),
                        theme=None, key=f"{key}_heatmap")
    st.dataframe(df, hide_index=True, key=f"{key}_trials")


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def history_chart(df: pd.DataFrame, metric: str, lower: bool) -> go.Figure:
    """Every finished trial's figure and the best so far, over trial numbers (as Optuna's optimisation history)."""
    done = df[df["state"] == "complete"].sort_values("trial")
    best = done["value"].cummin() if lower else done["value"].cummax()
    fig = go.Figure()
    # plain lists: a spec that tests and the CSV of a chart read as numbers, not plotly's packed arrays
    fig.add_trace(go.Scatter(x=done["trial"].tolist(), y=done["value"].tolist(), mode="markers", name=metric,
                             marker={"color": charts.GREY}))
    fig.add_trace(go.Scatter(x=done["trial"].tolist(), y=best.tolist(), mode="lines", name="best so far",
                             line={"color": charts.GREEN}, line_shape="hv"))
    pruned = df[df["state"] == "pruned"]
    if not pruned.empty:
        fig.add_trace(go.Scatter(x=pruned["trial"], y=[None] * len(pruned), mode="markers", name="pruned"))
    fig.update_layout(title=f"Best {metric} over trials", xaxis_title="trial", yaxis_title=metric, height=320,
                      legend={"orientation": "h", "y": -0.3})
    return fig


def importance_chart(imp: dict[str, float]) -> go.Figure:
    """Each parameter's share of the figure's variation (Optuna's fANOVA importances)."""
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker_color=charts.GREEN))
    fig.update_layout(title="Parameter importance" + ("" if items else " (needs more finished trials)"),
                      xaxis_title="share", height=320, xaxis={"range": [0, 1]}, yaxis={"automargin": True})
    return fig


def slice_chart(done: pd.DataFrame, param: str, metric: str) -> go.Figure:
    """The figure of every finished trial against one parameter's value (Optuna's slice plot), coloured by trial."""
    fig = go.Figure(go.Scatter(x=done[param], y=done["value"], mode="markers",
                               marker={"color": done["trial"], "colorscale": "Blues", "showscale": True,
                                       "colorbar": {"title": "trial"}}))
    fig.update_layout(title=f"{metric} by {param}", xaxis_title=param, yaxis_title=metric, height=300)
    return fig


def binned_pivot(done: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The best value in each cell of a HEAT_BINS × HEAT_BINS grid of two parameters (bin centres as labels)."""
    def bins(col: pd.Series) -> pd.Series:
        lo, hi = float(col.min()), float(col.max())
        if hi <= lo:
            return col.astype(float)
        edges = np.linspace(lo, hi, HEAT_BINS + 1)
        k = np.clip(np.searchsorted(edges, col, side="right") - 1, 0, HEAT_BINS - 1)
        return pd.Series((edges[k] + edges[k + 1]) / 2, index=col.index).round(6)

    frame = pd.DataFrame({x: bins(done[x]), y: bins(done[y]), "value": done["value"]})
    return frame.pivot_table(index=y, columns=x, values="value", aggfunc="max")


# ---------------------------------------------------------------- apply to live
def live_changes(result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The live parameters a search's chosen setting stands for ({param: value}, e.g. cooldown_s), and the chosen
    settings that are not live parameters (they take a restart with the setting in .env)."""
    best = (result.get("best") or {}).get("params") or {}
    changes: dict[str, Any] = {}
    other = []
    for name, v in best.items():
        b = BY_SETTING.get(name)
        if b is None:
            other.append(name)
        else:
            changes[b.param] = int(round(v)) if b.is_int else round(float(v), 4) + 0.0
    return changes, other


def apply_search_to_live(ctx: AppContext, result: dict[str, Any], live: dict[str, Any], *, key: str) -> None:
    """"Apply to live" of the chosen setting: the same confirmation and audited ``set_params`` command (source
    ``research``) as a saved replay's, the confirmation showing the PBO and the deflated Sharpe."""
    done = st.session_state.pop("_q_applied", None)
    if done is not None:
        (st.error if done[0] == "failed" else st.success)(done[1])
    changes, other = live_changes(result)
    if not changes:
        if other:
            st.caption(f"The chosen {', '.join(other)} are not live settings: set them in .env (a restart).")
        return
    if st.button("Apply the chosen setting to live…", key=f"{key}_apply",
                 help="Use the search's chosen live settings in live trading (asks first; audited)"):
        st.session_state["_q_apply"] = key
    if st.session_state.get("_q_apply") != key:
        return
    odds = result.get("odds") or {}
    pbo, dsr = odds.get("pbo"), odds.get("dsr")
    moves = "; ".join(f"{p} {_num(live.get(p, '–'))} → {_num(v)}" for p, v in changes.items())
    luck = (f"PBO {pbo:.2f}" if pbo is not None else "PBO n/a") + ", " + (
        f"deflated Sharpe {dsr:.2f}" if dsr is not None else "deflated Sharpe n/a")
    warn = f" Not applied: {', '.join(other)} (not live settings)." if other else ""
    sid = result.get("id", "–")
    rv.confirm_live_change(
        ctx, changes, asking="_q_apply", answer="_q_applied", yes=f"{key}_apply_yes", no=f"{key}_apply_no",
        question=f"Apply search #{sid}'s chosen setting to live trading? {moves}. The odds it is luck: {luck} "
                 f"({plain(odds.get('verdict', ''))}).{warn} The engine uses them from its next tick.",
        done=lambda queued: f"Search #{sid} applied to live{queued}: {moves} ({luck})")

