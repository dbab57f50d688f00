"""Basket health: member scores, negative ratio, mean score, consecutive ticks, ETF lock, conflicts, last intent."""

import streamlit as st

from core import views
from ui import charts
from ui.state import load_context

ctx = load_context()
st.title("Basket health")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def baskets() -> None:
    now = ctx.now()
    for b in views.basket_health(ctx.store, ctx.settings, now):
        with st.container(border=True, key=f"basket_{b['name']}"):
            st.subheader(f"{b['name']} → {b['inverse_etf']}")
            c = st.columns(5)
            th = b["thresholds"]
            # "Fresh member scores" is cut in a fifth of a 1280 px page
            c[0].metric("Fresh scores", f"{b['n_signals']} / {len(b['members'])}",
                        help=f"members with a fresh score; needs ≥ {th['min_signals']}")
            c[1].metric("Negative ratio", f"{b['negative_ratio']:.0%}", help=f"needs ≥ {th['neg_ratio']:.0%}")
            c[2].metric("Mean score", f"{b['mean_score']:+.3f}", help=f"needs ≤ {th['mean_score']}")
            c[3].metric("Consecutive ticks", f"{b['consecutive']} / {b['needed']}")
            c[4].metric("ETF lock", f"{b['etf_lock_s']:.0f}s" if b["etf_lock_s"] else "free")
            st.plotly_chart(charts.basket_scores(b), theme=None, key=f"basket_chart_{b['name']}")
            facts = []
            facts.append("condition met" if b["condition"] else "condition not met")
            if b["conflicts_held"]:
                facts.append(f"blocked: holding {', '.join(b['conflicts_held'])}")
            else:
                facts.append(f"no conflicting holding ({', '.join(b['conflicts'])})")
            if b["etf_held"]:
                facts.append(f"{b['inverse_etf']} held")
            if b["blocked_by"]:
                facts.append(f"last fire blocked by {b['blocked_by']}")
            li = b["last_intent"]
            facts.append(f"last intent {li['symbol']} x{li['qty']:g} ({li['status']}) at {li['created_at']}" if li
                         else "no intent yet")
            st.caption(" · ".join(facts))


baskets()
