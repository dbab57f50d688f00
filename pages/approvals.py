"""Approvals: pending intents with Approve / Reject (one by one or all at once); approving re-checks risk before
anything is sent. Each intent's window counts wall-clock seconds, whatever SIM_SPEED is, and the countdown shows
what really remains. What a click did stays in Recent decisions, its rows highlighted."""

import pandas as pd
import streamlit as st

from core import views
from ui.state import load_context, send_command
from ui.tables import recent_decision_columns

ctx = load_context()
st.title("Approvals")

JUST = "background-color: rgba(255, 200, 0, 0.35)"  # the rows of this session's last click


def decide(intent_ids: list[str], kind: str) -> None:
    """One command per intent through the one command path: each approval re-checks risk at the current price and
    each is idempotent by intent id (a second tab or a double click answers "already submitted", never a second
    order)."""
    mine: dict[str, str] = st.session_state.setdefault("_my_decisions", {})
    for intent_id in intent_ids:
        res = send_command(ctx, kind, {"intent_id": intent_id})
        mine[intent_id] = f"{kind}: {res.get('result') or res.get('status')}"
    st.session_state["_just_decided"] = list(intent_ids)


def recent_table() -> None:
    just: list[str] = st.session_state.get("_just_decided", [])
    mine: dict[str, str] = st.session_state.get("_my_decisions", {})
    df = views.recent_decisions(ctx.store, max(20, len(just)))
    st.subheader("Recent decisions")
    if df.empty:
        st.caption("No intent decided yet.")
        return
    df["your click"] = [mine.get(i, "") for i in df["id"]]
    df["note"] = df["note"].fillna("")
    df["when"] = df["when"].fillna("").str[5:]  # recent: month-day and time (New York), room for a click's answer
    # what a trader checks first, first: status and the answer to the click whole at 1280 px (the id, long, after)
    df = df[["when", "symbol", "side", "qty", "status", "your click", "id", "note", "by"]]
    if just:
        shown = set(df["id"]) & set(just)
        st.caption(f"Highlighted: your last click ({len(shown)} intent{'s' if len(shown) != 1 else ''}).")
    styled = (df.style.apply(lambda r: [JUST if r["id"] in just else ""] * len(r), axis=1)
              .format({"qty": "{:.6g}"}))  # sizing arithmetic can store 112.99999999999999 shares
    st.dataframe(styled, hide_index=True, key="recent_decisions", column_config=recent_decision_columns(df))


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def queue() -> None:
    now, wall_now, speed = ctx.now(), ctx.wall_now(), ctx.speed()
    params = views.live_params(ctx.store)
    if params.get("auto_mode"):
        st.info("AUTO_MODE is on: intents are submitted without approval.")
    if params.get("paused"):
        st.warning("Trading is paused: approving an entry is refused until you resume.")
    ttl = ctx.settings.intent_ttl_s
    st.caption(f"Each intent waits {views.countdown_text(ttl)} of real time for your decision"
               + (f" (the market runs ×{speed:g}: {ttl * speed / 60:,.0f} market minutes)" if speed != 1 else "")
               + ". Approve re-checks risk at the price of the moment, then sends the order.")
    pending = views.pending_intents(ctx.store, now, wall_now, speed)
    st.subheader(f"Pending intents ({len(pending)})")
    if pending.empty:
        st.caption("Nothing waiting for approval.")
    else:
        ids = list(pending["id"])
        b = st.columns([1.4, 1.4, 5], vertical_alignment="center")
        b[0].button(f"Approve all ({len(ids)})", key="bulk_approve", type="primary", on_click=decide,
                    args=(ids, "approve"), width="stretch", help="Each one is re-checked against the risk limits.")
        b[1].button(f"Reject all ({len(ids)})", key="bulk_reject", on_click=decide, args=(ids, "reject"),
                    width="stretch")
    for row in pending.itertuples():
        with st.container(border=True, key=f"intent_{row.id}"):
            c = st.columns([2, 1, 1, 2, 2], vertical_alignment="center")
            c[0].markdown(f"**{row.symbol}** · {row.kind}")
            c[1].markdown(f":{'green' if row.side == 'buy' else 'red'}[{row.side.upper()}]")
            c[2].markdown(f"{row.qty:g} sh")
            c[3].markdown(f"${row.notional:,.2f} @ ${row.price:,.2f}")
            c[4].markdown(f"risk after fill: {row.risk_after:.2%}" if not pd.isna(row.risk_after)
                          else "risk after fill: –")
            st.caption(f"`{row.id}` · {row.reason}")
            open_ = row.expires_in_s > 0
            b = st.columns([4, 1.2, 1.2], vertical_alignment="center")
            b[0].markdown(f"expires in **{views.countdown_text(row.expires_in_s)}**" if open_ else "**expired**")
            b[1].button("Approve", key=f"approve_{row.id}", type="primary", on_click=decide, args=([row.id], "approve"),
                        disabled=not open_, width="stretch")
            b[2].button("Reject", key=f"reject_{row.id}", on_click=decide, args=([row.id], "reject"),
                        width="stretch")
    recent_table()


queue()
