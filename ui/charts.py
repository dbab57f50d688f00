"""Plotly figures for the pages (pure functions: data in, figure out)."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    """Account equity on a market-hours axis (``MarketAxis``: nights, weekends, holidays and the end of a half day
    cut out; a flat line over a closed market says nothing); the curve is what ``views.equity_curve_sampled``
    returns, at most a few thousand points. Hover shows each point's New York time."""
    fig = go.Figure()
    if not curve.empty:
        axis = MarketAxis.spanning(curve["ts"])
        fig.add_trace(go.Scatter(x=axis.position(curve["ts"]), y=curve["equity"], customdata=axis.labels(curve["ts"]),
                                 mode="lines" if len(curve) > 30 else "lines+markers", name="equity",
                                 line={"color": "#1565c0"}, hovertemplate=HOVER_EQUITY))
        fig.update_xaxes(**axis.layout())
    fig.update_layout(title="Equity (New York time, market hours only)", height=300,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      # the dollar sign on the ticks: a "$" axis title lands on the tick labels at this margin
                      yaxis=money_yaxis(curve["equity"] if not curve.empty else []), xaxis={"automargin": True})
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
    if not fig.data:  # plotly's default range for no data is -1 … 6 (±400 % and more): a small window, and why
        fig.update_xaxes(range=[-EMPTY_MOVE, EMPTY_MOVE])
        fig.update_yaxes(range=[-EMPTY_MOVE, EMPTY_MOVE])
        fig.add_annotation(text="no closed trade yet", x=0, y=0, showarrow=False, font={"color": GREY})
    return fig


EMPTY_MOVE = 0.01  # the MAE/MFE axes without a trade: ±1 %


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
    """Equity curves (label, frame with ts and equity, line dash) on one market-hours axis (``MarketAxis``)."""
    fig = go.Figure()
    drawn = [(label, df, dash) for label, df, dash in curves if not df.empty]
    if drawn:
        axis = MarketAxis.spanning(pd.concat([df["ts"] for _, df, _ in drawn]))
        for label, df, dash in drawn:
            fig.add_trace(go.Scatter(x=axis.position(df["ts"]), y=df["equity"], customdata=axis.labels(df["ts"]),
                                     mode="lines", name=label, line={"dash": dash}, hovertemplate=HOVER_EQUITY))
        fig.update_xaxes(**axis.layout())
    fig.update_layout(title="Equity (New York time, market hours only)", height=340,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.15},
                      yaxis=money_yaxis(pd.concat([df["equity"] for _, df, _ in drawn]) if drawn else []))
    return fig


HOVER_EQUITY = "%{customdata}<br>$%{y:,.2f}<extra>%{fullData.name}</extra>"
MAX_DATE_TICKS = 8  # date labels ("Nov 23") on a market-hours axis: at 1280 px each needs about a tenth of the chart
FLAT_SPAN = 10.0  # dollars: an equity axis narrower than this repeats its whole-dollar labels ("$100,001" x 5)


def money_yaxis(values: Any) -> dict[str, Any]:
    """A dollar axis in whole dollars. A flat or nearly flat curve gets a range of at least ``FLAT_SPAN`` dollars
    and a 2-dollar step: plotly would otherwise tick every 20 cents and print each whole dollar several times."""
    out: dict[str, Any] = {"automargin": True, "tickformat": ",.0f", "tickprefix": "$"}
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return out
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < FLAT_SPAN:
        mid = round((lo + hi) / 2)
        out.update(range=[mid - FLAT_SPAN / 2 - 1, mid + FLAT_SPAN / 2 + 1], dtick=2, tick0=mid)
    return out


class MarketAxis:
    """An x axis of market time: hours of regular trading since the first session's open, session after session.

    Closed time has no width: nights, weekends, exchange holidays and the rest of an early-close day (the day
    after Thanksgiving closes at 13:00). Plotly's rangebreaks could not say that: an hour pattern plus holiday
    dates overlapped around Thanksgiving and drew the sessions on top of each other, with "Nov 23" and "Nov 30"
    printed in one place. Positions are computed from the exchange calendar (``core.clock.session_bounds``, DST
    included); the ticks are dates at session opens (at most ``MAX_DATE_TICKS``), or hours for one or two
    sessions, and hover shows each point's own New York time."""

    def __init__(self, days: list[Any]) -> None:
        from core.clock import session_bounds

        self.days = days
        bounds = [session_bounds(d) for d in days]
        self.opens = pd.DatetimeIndex([pd.Timestamp(b[0]).tz_convert("UTC") for b in bounds if b])
        self.closes = pd.DatetimeIndex([pd.Timestamp(b[1]).tz_convert("UTC") for b in bounds if b])
        self.hours = ((self.closes - self.opens).total_seconds() / 3600.0).to_numpy()
        self.offsets = np.concatenate([[0.0], np.cumsum(self.hours)[:-1]]) if len(self.hours) else np.zeros(0)

    @classmethod
    def spanning(cls, ts: pd.Series) -> MarketAxis:
        """The axis of the sessions from the New York date of the first of ``ts`` to that of the last."""
        from core.clock import previous_session, sessions_between

        t = pd.to_datetime(pd.Series(ts), utc=True)
        first, last = t.min().tz_convert(NY_ZONE).date(), t.max().tz_convert(NY_ZONE).date()
        return cls(sessions_between(first, last) or [previous_session(first)])  # a closed day alone: the one before

    def position(self, ts: pd.Series) -> np.ndarray:
        """Market hours since the first open of each time; a closed-market time sits at the previous close."""
        t = pd.to_datetime(pd.Series(ts), utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)
        opens = self.opens.as_unit("ns").asi8
        i = np.clip(np.searchsorted(opens, t, side="right") - 1, 0, len(opens) - 1)
        inside = np.clip((t - opens[i]) / 3.6e12, 0.0, self.hours[i])
        return self.offsets[i] + inside

    @staticmethod
    def labels(ts: pd.Series) -> list[str]:
        """Each time as the hover shows it: New York wall time."""
        return [f"{t:%a %Y-%m-%d %H:%M} ET" for t in pd.to_datetime(pd.Series(ts), utc=True).dt.tz_convert(NY_ZONE)]

    def ticks(self) -> tuple[list[float], list[str]]:
        """(positions, labels): every whole hour of one or two sessions, else session opens as dates, every k-th
        one so that at most ``MAX_DATE_TICKS`` are printed."""
        vals: list[float] = []
        texts: list[str] = []
        if len(self.days) <= 2:
            for k, (o, h, off) in enumerate(zip(self.opens, self.hours, self.offsets, strict=True)):
                local = o.tz_convert(NY_ZONE)
                vals.append(float(off))
                texts.append(f"{local:%b %d}" if k or len(self.days) > 1 else f"{local:%H:%M}<br>{local:%b %d}")
                first_hour = 1.0 - (local.minute / 60.0) if local.minute else 1.0
                step = first_hour
                while step < h - 0.25:  # the whole hours inside the session (not one that crowds the close)
                    vals.append(float(off + step))
                    texts.append(f"{local + pd.Timedelta(hours=step):%H:%M}")
                    step += 1.0
            return vals, texts
        every = -(-len(self.days) // MAX_DATE_TICKS)
        for k in range(0, len(self.days), every):
            vals.append(float(self.offsets[k]))
            texts.append(f"{self.opens[k].tz_convert(NY_ZONE):%b %d}")
        return vals, texts

    def layout(self) -> dict[str, Any]:
        """The x axis settings: the ticks, the whole range, grid lines at the ticks."""
        vals, texts = self.ticks()
        end = float(self.offsets[-1] + self.hours[-1]) if len(self.hours) else 1.0
        return {"tickmode": "array", "tickvals": vals, "ticktext": texts, "range": [0.0, end], "automargin": True,
                "showgrid": True, "zeroline": False, "title": None}


NY_ZONE = "America/New_York"


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
