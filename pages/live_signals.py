"""Live signals: latest score per ticker, the decision stream with suppression reasons, the reason chart, events."""

import streamlit as st

from core import views
from core.clock import NY
from ui import charts
from ui.prices import live_price_chart
from ui.state import load_context
from ui.tables import decision_stream_columns

ctx = load_context()
st.title("Live signals")



@st.fragment(run_every=ctx.settings.ui_refresh_s)
def live() -> None:
    now = ctx.now()
    totals = views.signal_totals(ctx.store)
    c = st.columns(4)
    c[0].metric("Market time (ET)", f"{now.astimezone(NY):%H:%M:%S}", help=f"{now.astimezone(NY):%Y-%m-%d}")
    c[1].metric("Decisions", sum(v for k, v in totals.items() if k != "skipped"))
    c[2].metric("Actionable", totals.get("actionable", 0))
    c[3].metric("Suppressed", totals.get("suppressed", 0))
    latest = views.latest_by_ticker(ctx.store)
    st.subheader("Latest score per ticker")
    if latest.empty:
        st.info("Waiting for the first tick: the engine scores tier A every 30 s and tier B every 60 s "
                "(market time).")
    else:
        # the bars are a chart: a progress column would draw a zero score as half a bar and both signs alike
        st.plotly_chart(charts.score_bars(latest), theme=None, key="score_chart")
        st.dataframe(latest, hide_index=True, key="latest_scores", column_config={
            "score": st.column_config.NumberColumn("score", format="%+.3f"),
            "cutoff": st.column_config.NumberColumn("cutoff", format="%.2f"),
            "vol_spike": st.column_config.NumberColumn("vol spike", format="%.2f"),
            "price": st.column_config.NumberColumn("price", format="$%.2f"),
        })
    st.subheader("Price, signals and fills")
    live_price_chart(ctx)
    # the whole width: in three fifths of a 1280 px page the reason (the column a trader reads it for) was cut
    st.subheader("Decision stream")
    choice = st.segmented_control("Show", ["all", "actionable", "suppressed"], default="all", key="stream_filter")
    stream = views.decision_stream(ctx.store, 200, None if choice in (None, "all") else choice)
    st.dataframe(stream, hide_index=True, height=420, key="decision_stream",
                 column_config=decision_stream_columns(stream))
    left, right = st.columns([3, 2])
    with left:
        counts = views.suppression_counts(ctx.store)
        st.plotly_chart(charts.suppression_bar(counts), theme=None, key="suppression_chart")
    with right:
        notes = views.notifications(ctx.store, 8)
        if not notes.empty:
            st.subheader("Engine messages")
            st.dataframe(notes, hide_index=True, key="notes")
    st.subheader("Events and LLM analysis")
    ev = views.events(ctx.store, 30)
    if ev.empty:
        st.caption("No events yet: EDGAR filings (EDGAR_ENABLED=1) and volume spikes on Bench tickers appear here, "
                   "with the LLM's answer when LLM_ENABLED=1.")
    else:
        st.dataframe(ev, hide_index=True, key="events", column_config={
            "sentiment": st.column_config.NumberColumn(format="%+.2f"),
            "confidence": st.column_config.NumberColumn(format="%.2f"),
            "url": st.column_config.LinkColumn("filing")})
    calls = views.llm_calls(ctx.store, 30)
    if not calls.empty:
        with st.expander(f"LLM calls ({len(calls)} latest)"):
            st.dataframe(calls, hide_index=True, key="llm_calls")


live()
