"""Approvals: pending intents with Approve / Reject; approving re-checks risk before anything is sent."""

import streamlit as st

from core import views
from ui.state import load_context, send_command

ctx = load_context()
st.title("Approvals")


def decide(intent_id: str, kind: str) -> None:
    res = send_command(ctx, kind, {"intent_id": intent_id})
    st.session_state["_decision"] = (intent_id, kind, res)


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def queue() -> None:
    now = ctx.now()
    params = views.live_params(ctx.store)
    if params.get("auto_mode"):
        st.info("AUTO_MODE is on: intents are submitted without approval.")
    if params.get("paused"):
        st.warning("Trading is paused: approving an entry is refused until you resume.")
    last = st.session_state.pop("_decision", None)
    if last:
        intent_id, kind, res = last
        msg = f"{kind} {intent_id[:10]}: {res.get('result') or res.get('status')}"
        (st.success if res.get("status") == "done" and not str(res.get("result", "")).startswith("refused")
         else st.warning)(msg)
    pending = views.pending_intents(ctx.store, now)
    st.subheader(f"Pending intents ({len(pending)})")
    if pending.empty:
        st.caption("Nothing waiting for approval.")
    for row in pending.itertuples():
        with st.container(border=True, key=f"intent_{row.id}"):
            c = st.columns([2, 1, 1, 2, 2], vertical_alignment="center")
            c[0].markdown(f"**{row.symbol}** · {row.kind}")
            c[1].markdown(f":{'green' if row.side == 'buy' else 'red'}[{row.side.upper()}]")
            c[2].markdown(f"{row.qty:g} sh")
            c[3].markdown(f"${row.notional:,.2f} @ ${row.price:,.2f}")
            c[4].markdown(f"risk after fill: {row.risk_after:.2%}" if row.risk_after == row.risk_after
                          else "risk after fill: –")
            st.caption(row.reason)
            left = max(0, int(row.expires_in_s))
            b = st.columns([4, 1.2, 1.2], vertical_alignment="center")
            b[0].markdown(f"expires in **{left // 60}:{left % 60:02d}**")
            b[1].button("Approve", key=f"approve_{row.id}", type="primary", on_click=decide, args=(row.id, "approve"),
                        disabled=left <= 0, width="stretch")
            b[2].button("Reject", key=f"reject_{row.id}", on_click=decide, args=(row.id, "reject"), width="stretch")
    st.subheader("Recent decisions")
    st.dataframe(views.recent_intents(ctx.store, 50), hide_index=True, key="recent_intents")


queue()
