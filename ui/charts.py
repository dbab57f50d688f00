"""Plotly figures for the pages (pure functions: data in, figure out)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

GREEN, AMBER, RED, GREY = "#2e7d32", "#f9a825", "#c62828", "#9e9e9e"


def gauge(title: str, value: float, limit: float, *, unit: str = "%", scale: float = 100.0,
          axis_max: float | None = None) -> go.Figure:
    """A gauge with the limit drawn as a red threshold; green < 75 % of the limit < amber < limit < red."""
    v, lim = value * scale, limit * scale
    top = max(axis_max * scale if axis_max is not None else lim * 1.25, v * 1.05, 1e-9)
    fig = go.Figure(go.Indicator(
        # a long title in a fifth of a 1280 px page is wider than its gauge: a smaller font keeps it whole
        mode="gauge+number", value=round(v, 3), title={"text": title, "font": {"size": 15 if len(title) <= 18 else 12}},
        number={"suffix": unit, "valueformat": ".2f" if unit == "%" else ".0f"},
        gauge={
            "axis": {"range": [0, top], "ticksuffix": unit if unit == "%" else ""},
            "bar": {"color": "#263238"},
            "steps": [{"range": [0, 0.75 * lim], "color": "#c8e6c9"}, {"range": [0.75 * lim, lim], "color": "#ffe082"},
                      {"range": [lim, top], "color": "#ffcdd2"}],
            "threshold": {"line": {"color": RED, "width": 4}, "thickness": 0.85, "value": lim},
        },
    ))
    fig.update_layout(height=220, margin={"l": 45, "r": 45, "t": 50, "b": 10})  # room for the end ticks ("100%")
    return fig


def suppression_bar(counts: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=counts["n"] if not counts.empty else [], y=counts["reason"] if not counts.empty else [],
                           orientation="h", marker_color="#546e7a"))
    fig.update_layout(title="Suppression reasons", height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"autorange": "reversed", "automargin": True}, xaxis={"title": "signals",
                                                                                   "automargin": True})
    return fig


def equity_line(curve: pd.DataFrame) -> go.Figure:
    """Account equity in New York time with nights, weekends and holidays cut out (a flat line over a closed
    market says nothing); the curve is what ``views.equity_curve_sampled`` returns, at most a few thousand points."""
    fig = go.Figure()
    if not curve.empty:
        x = _ny_naive(curve["ts"])
        fig.add_trace(go.Scatter(x=x, y=curve["equity"], mode="lines" if len(curve) > 30 else "lines+markers",
                                 name="equity", line={"color": "#1565c0"}))
        fig.update_xaxes(rangebreaks=session_rangebreaks(x.min(), x.max()))
    fig.update_layout(title="Equity (New York time, market hours only)", height=300,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      # the dollar sign on the ticks: a "$" axis title lands on the tick labels at this margin
                      yaxis={"automargin": True, "tickformat": ",.0f", "tickprefix": "$"}, xaxis={"automargin": True})
    return fig


def mae_mfe_scatter(trades: pd.DataFrame, title: str = "MAE vs MFE per trade") -> go.Figure:
    """Each closed trade's worst (MAE, x) and best (MFE, y) excursion, winners green, losers red. Percent ticks
    and automargins so no axis label is cut, whatever the values' length."""
    fig = go.Figure()
    if not trades.empty:
        for won, name, colour in ((True, "winner", GREEN), (False, "loser", RED)):
            t = trades[(trades["pnl"] > 0) == won]
            if t.empty:
                continue
            fig.add_trace(go.Scatter(x=t["mae"], y=t["mfe"], mode="markers", name=name, text=t["symbol"],
                                     marker={"color": colour, "size": 6, "opacity": 0.7},
                                     hovertemplate="%{text}<br>MAE %{x:.2%}<br>MFE %{y:.2%}<extra></extra>"))
    # the legend sits between the title and the plot (a taller top margin), never on the title
    fig.update_layout(title={"text": title, "y": 0.97, "yanchor": "top"}, height=340,
                      margin={"l": 10, "r": 10, "t": 80, "b": 10},
                      xaxis={"title": "MAE (worst move)", "tickformat": ".1%", "automargin": True, "zeroline": True},
                      yaxis={"title": "MFE (best move)", "tickformat": ".1%", "automargin": True, "zeroline": True},
                      legend={"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"})
    return fig


def price_chart(bars: pd.DataFrame, symbol: str, *, signals: pd.DataFrame | None = None,
                fills: pd.DataFrame | None = None, line: pd.DataFrame | None = None,
                subtitle: str = "") -> go.Figure:
    """One ticker's 1-minute candles (``bars``: ts, open, high, low, close) in New York time, market hours only,
    with the engine's actionable signals (``signals``: ts or bar_ts, score; a bullish one below its candle, a
    bearish one above) and its fills (``fills``: ts, side, price, qty; at the fill price). Without bars, ``line``
    (ts, price) draws the recorded prices instead."""
    fig = go.Figure()
    xs: list[pd.Series] = []
    lo_hi: dict[Any, tuple[float, float]] = {}
    if not bars.empty:
        x = _ny_naive(bars["ts"])
        xs.append(x)
        fig.add_trace(go.Candlestick(x=x, open=bars["open"], high=bars["high"], low=bars["low"], close=bars["close"],
                                     name=symbol, increasing_line_color=GREEN, decreasing_line_color=RED))
        lo_hi = dict(zip(x, zip(bars["low"], bars["high"], strict=True), strict=True))
    elif line is not None and not line.empty:
        x = _ny_naive(line["ts"])
        xs.append(x)
        fig.add_trace(go.Scatter(x=x, y=line["price"], mode="lines", name=f"{symbol} (decision prices)",
                                 line={"color": "#546e7a"}))
    span = (bars["high"].max() - bars["low"].min()) if not bars.empty else 0.0
    pad = max(span * 0.03, 0.0005 * float(bars["close"].iloc[-1])) if not bars.empty else 0.0
    if signals is not None and not signals.empty:
        when = signals["bar_ts"].fillna(signals["ts"]) if "bar_ts" in signals else signals["ts"]
        x = _ny_naive(when).dt.floor("min")
        xs.append(x)
        for up in (True, False):
            m = (signals["score"] > 0) == up
            if not m.any():
                continue
            xm = x[m]
            price = signals["price"][m].astype(float)
            y = [(lo_hi[t][0] - pad if up else lo_hi[t][1] + pad) if t in lo_hi else p
                 for t, p in zip(xm, price, strict=True)]
            fig.add_trace(go.Scatter(
                x=xm, y=y, mode="markers", name="bullish signal" if up else "bearish signal",
                customdata=signals["score"][m], marker={"symbol": "triangle-up" if up else "triangle-down", "size": 11,
                                                         "color": GREEN if up else RED,
                                                         "line": {"color": "white", "width": 1}},
                hovertemplate="signal %{customdata:+.3f}<br>%{x|%H:%M}<extra></extra>"))
    if fills is not None and not fills.empty:
        x = _ny_naive(fills["ts"])
        xs.append(x)
        for side, colour, sym in (("buy", "#1565c0", "circle"), ("sell", "#ef6c00", "x")):
            m = fills["side"] == side
            if not m.any():
                continue
            fig.add_trace(go.Scatter(
                x=x[m], y=fills["price"][m], mode="markers", name=f"{side} fill", customdata=fills["qty"][m],
                marker={"symbol": sym, "size": 10, "color": colour, "line": {"color": "#263238", "width": 1}},
                hovertemplate=f"{side} %{{customdata:,.0f}} @ $%{{y:,.2f}}<br>%{{x|%H:%M}}<extra></extra>"))
    title = f"{symbol} 1-minute bars (New York time)" + (f" · {subtitle}" if subtitle else "")
    fig.update_layout(title=title, height=420, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      xaxis={"rangeslider": {"visible": False}, "automargin": True},
                      yaxis={"automargin": True, "tickformat": ",.2f", "tickprefix": "$"},
                      legend={"orientation": "h", "y": -0.12})
    if xs:
        allx = pd.concat(xs)
        fig.update_xaxes(rangebreaks=session_rangebreaks(allx.min(), allx.max()))
    return fig


def basket_scores(b: dict[str, Any]) -> go.Figure:
    scores = b["scores"]
    members = b["members"]
    values = [scores.get(m) for m in members]
    colours = [GREY if v is None else (RED if v < 0 else GREEN) for v in values]
    # each member's score under its name, not at its bar's end: a small negative score's label sat on the dotted
    # threshold line; the threshold is named in the title and the mean in the right margin, so no text overlaps
    ticks = [f"{m}<br>{'–' if v is None else f'{v:+.2f}'}" for m, v in zip(members, values, strict=True)]
    fig = go.Figure(go.Bar(x=members, y=[0 if v is None else v for v in values], marker_color=colours,
                           hovertemplate="%{x}: %{y:+.3f}<extra></extra>"))
    fig.add_hline(y=b["thresholds"]["mean_score"], line_dash="dot", line_color=RED)
    if values and any(v is not None for v in values):
        fig.add_hline(y=b["mean_score"], line_color="#263238", annotation_text=f"mean<br>{b['mean_score']:+.3f}",
                      annotation_position="right", annotation_xshift=4)
    fig.update_layout(height=300, margin={"l": 10, "r": 60, "t": 40, "b": 10},
                      yaxis={"range": [-1.1, 1.1], "automargin": True},
                      xaxis={"automargin": True, "tickmode": "array", "tickvals": members, "ticktext": ticks},
                      title=f"{b['name']} member scores · red dots: fires at mean ≤ {b['thresholds']['mean_score']}")
    return fig


def score_colour(v: float | None) -> str:
    """Red below zero, green above, grey at zero or without a score: the sign is what a score says first."""
    return GREY if v is None or v != v or v == 0 else (RED if v < 0 else GREEN)


def score_bars(latest: pd.DataFrame) -> go.Figure:
    """The latest score per ticker as horizontal bars drawn from 0 on a fixed -1 … +1 axis (a zero score has no
    bar, not half of one), negative scores in red and positive ones in green; each bar carries its value and the
    ticker's cutoff as a tick."""
    syms = [] if latest.empty else latest["symbol"].tolist()
    raw = [] if latest.empty else [None if pd.isna(v) else float(v) for v in latest["score"]]
    fig = go.Figure(go.Bar(x=[0.0 if v is None else v for v in raw], y=syms, base=0, orientation="h",
                           marker_color=[score_colour(v) for v in raw],
                           text=["–" if v is None else f"{v:+.3f}" for v in raw], textposition="outside",
                           cliponaxis=False, name="score"))
    if not latest.empty and "cutoff" in latest:
        for sign in (1, -1):  # a score counts from its cutoff on either side
            cut = [None if pd.isna(c) else sign * float(c) for c in latest["cutoff"]]
            fig.add_trace(go.Scatter(x=cut, y=syms, mode="markers", name="cutoff" if sign > 0 else None,
                                     showlegend=sign > 0, marker={"symbol": "line-ns-open", "size": 14,
                                                                  "color": "#263238"}))
    fig.add_vline(x=0, line_color="#263238", line_width=1)
    fig.update_layout(title="Latest score per ticker", height=max(220, 40 + 28 * len(syms)),
                      margin={"l": 10, "r": 40, "t": 40, "b": 10}, showlegend=False,
                      xaxis={"range": [-1.1, 1.1], "zeroline": False, "automargin": True},
                      yaxis={"autorange": "reversed", "automargin": True, "type": "category"})
    return fig


def kpi_lines(snapshots: pd.DataFrame, columns: list[str], title: str, *, percent: bool = False) -> go.Figure:
    """Hourly KPI snapshots as one line per column."""
    fig = go.Figure()
    for col in columns:
        if not snapshots.empty and col in snapshots:
            fig.add_trace(go.Scatter(x=snapshots["ts"], y=snapshots[col], name=col.replace("_", " "),
                                     mode="lines+markers" if len(snapshots) < 40 else "lines"))
    fig.update_layout(title=title, height=280, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"tickformat": ".0%" if percent else ",", "automargin": True,
                             "rangemode": "nonnegative"},  # counts and rates: no negative axis
                      legend={"orientation": "h", "y": -0.2})
    if len(snapshots) == 1:  # one snapshot: an hour either side, not an axis of milliseconds
        t = snapshots["ts"].iloc[0]
        fig.update_xaxes(range=[t - pd.Timedelta(hours=1), t + pd.Timedelta(hours=1)])
    return fig


def _ny_naive(ts: pd.Series) -> pd.Series:
    """New York wall time without the offset: what plotly's hour rangebreaks are written in."""
    s = pd.to_datetime(ts, utc=True)
    return s.dt.tz_convert("America/New_York").dt.tz_localize(None)


def session_rangebreaks(first: pd.Timestamp, last: pd.Timestamp) -> list[dict[str, Any]]:
    """Hide nights, weekends and exchange holidays, so a run's equity is drawn session against session."""
    from core.clock import sessions_between

    sessions = set(sessions_between(first.date(), last.date()))
    holidays = [d.strftime("%Y-%m-%d") for d in pd.bdate_range(first.normalize(), last.normalize())
                if d.date() not in sessions]
    out: list[dict[str, Any]] = [{"bounds": ["sat", "mon"]}, {"bounds": [16, 9.5], "pattern": "hour"}]
    if holidays:
        out.append({"values": holidays})
    return out


def equity_overlay(curves: list[tuple[str, pd.DataFrame, str | None]]) -> go.Figure:
    """Equity curves (label, frame with ts and equity, line dash) on one axis, market hours only."""
    fig = go.Figure()
    lo = hi = None
    for label, df, dash in curves:
        if df.empty:
            continue
        x = _ny_naive(df["ts"])
        lo = x.min() if lo is None else min(lo, x.min())
        hi = x.max() if hi is None else max(hi, x.max())
        fig.add_trace(go.Scatter(x=x, y=df["equity"], mode="lines", name=label, line={"dash": dash}))
    fig.update_layout(title="Equity (New York time, market hours only)", height=340,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.15},
                      yaxis={"automargin": True, "tickformat": ",.0f", "tickprefix": "$"})
    if lo is not None:
        fig.update_xaxes(rangebreaks=session_rangebreaks(lo, hi), automargin=True)
    return fig


def _numeric(labels: pd.Index) -> pd.Index:
    """Grid values as numbers when every one is a number (ints stay ints), else as they are."""
    try:
        return pd.Index(pd.to_numeric(labels))
    except (TypeError, ValueError):
        return labels


def sweep_heatmap(pivot: pd.DataFrame, metric: str) -> go.Figure:
    """A sweep's metric by cutoff delta (x) and cooldown (y), every cell labelled with its value."""
    # a sweep saved from the command line keeps list values as it read them ("60", "180", "300"): as numbers
    # again, so the grid is in numeric order, not text order ("180" < "300" < "60")
    pivot = pivot.set_axis(_numeric(pivot.index), axis=0).set_axis(_numeric(pivot.columns), axis=1)
    pivot = pivot.sort_index(axis=0).sort_index(axis=1)
    xs = [f"{v:+.2f}" if isinstance(v, int | float) else str(v) for v in pivot.columns]
    ys = [str(v) for v in pivot.index]
    # cells at positions 0..n-1 labelled with the grid's values: string categories ("60", "180", "300") end up
    # sorted as text in the browser whatever categoryarray says; the smallest cooldown on top like the table
    fig = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=list(range(len(xs))), y=list(range(len(ys))),
                               colorscale="RdYlGn", colorbar={"title": metric}, text=pivot.round(4).to_numpy(),
                               texttemplate="%{text}", customdata=[[(x, y) for x in xs] for y in ys],
                               hovertemplate="cutoff delta %{customdata[0]}, cooldown %{customdata[1]} s: "
                                             "%{z}<extra></extra>"))
    fig.update_layout(title=f"{metric} by cutoff delta × cooldown", height=380,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      xaxis={"title": "cutoff delta", "automargin": True, "tickmode": "array",
                             "tickvals": list(range(len(xs))), "ticktext": xs, "showgrid": False},
                      yaxis={"title": "cooldown (s)", "automargin": True, "tickmode": "array",
                             "tickvals": list(range(len(ys))), "ticktext": ys, "autorange": "reversed",
                             "showgrid": False})
    return fig


AXIS_LABELS = {"cutoff_delta": "cutoff delta", "mixer_cooldown_s": "cooldown (s)"}


def sweep_heatmap_axes(pivot: pd.DataFrame, metric: str, x: str, y: str, note: str = "") -> go.Figure:
    """``sweep_heatmap`` over any two swept settings (x: the pivot's columns, y: its index); ``note`` says how the
    other parameters were folded into each cell."""
    fig = sweep_heatmap(pivot, metric)

    def label(name: str, v: Any) -> str:
        return f"{v:+.2f}" if name == "cutoff_delta" else f"{v:g}" if isinstance(v, float) else str(v)

    fig.update_traces(x=[label(x, v) for v in pivot.columns], y=[label(y, v) for v in pivot.index])
    axes = f"{AXIS_LABELS.get(x, x)} × {AXIS_LABELS.get(y, y)}" if y else AXIS_LABELS.get(x, x)
    title = f"{metric} by {axes}" + (f" ({note})" if note else "")
    fig.update_layout(title=title, xaxis_title=AXIS_LABELS.get(x, x), yaxis_title=AXIS_LABELS.get(y, y))
    return fig
