"""Approvals: pending intents with Approve / Reject (one by one or all at once). Approving re-prices the order at
the price of the moment (shares, stop, take-profit), re-checks it and sends it, or refuses it in words; each card
shows the signal's price and the order as it would be sent now. Each intent's window counts wall-clock seconds,
whatever SIM_SPEED is. What a click did stays above the queue until dismissed or replaced by the next click."""

import pandas as pd
import streamlit as st

from core import views
from core.clock import NY
from core.engine.sending import signed_pct
from ui import answers
from ui.state import load_context, send_command
from ui.tables import recent_decision_columns

ctx = load_context()
st.title("Approvals")

JUST = "background-color: rgba(255, 200, 0, 0.35)"  # the rows of this session's last click
SCOPE = "approvals"


def decide(intents: list[tuple[str, str]], kind: str) -> None:
    """One command per (intent id, symbol) through the one command path: each approval re-prices and re-checks at
    the current price and each is idempotent by intent id (a second tab or a double click answers "already
    submitted", never a second order). The answer, one line per intent, stays on this page."""
    mine: dict[str, str] = st.session_state.setdefault("_my_decisions", {})
    lines: list[tuple[str, str]] = []
    for intent_id, symbol in intents:
        res = send_command(ctx, kind, {"intent_id": intent_id})
        text = str(res.get("result") or res.get("status"))
        mine[intent_id] = f"{kind}: {text.split(':', 1)[0]}"  # the table's short form; the answer has it whole
        lines.append((answers.level_of(res), f"**{symbol}** (`{intent_id}`): {text}"))
    st.session_state["_just_decided"] = [i for i, _ in intents]
    done = sum(1 for lvl, _ in lines if lvl == "success")
    verb = "Approve" if kind == "approve" else "Reject"
    title = f"{verb}: {len(lines)} intent{'s' if len(lines) != 1 else ''}" + (
        f", {done} {'submitted' if kind == 'approve' else 'rejected'}, {len(lines) - done} not" if len(lines) > 1
        else "")
    answers.say(SCOPE, title, lines)


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


def card(row, quote) -> None:  # noqa: ANN001 (a row of views.pending_intents; a SendQuote or None)
    """One intent: what the signal was, what Approve would send now, the countdown and the two buttons."""
    with st.container(border=True, key=f"intent_{row.id}"):
        c = st.columns([2, 1, 3, 3], vertical_alignment="center")
        c[0].markdown(f"**{row.symbol}** · {row.kind}")
        c[1].markdown(f":{'green' if row.side == 'buy' else 'red'}[{row.side.upper()}]")
        made = pd.Timestamp(row.created_at).tz_convert(NY)
        c[2].markdown(f"signal **${row.price:,.2f}** at {made:%H:%M:%S} ET · {row.qty:g} sh, "
                      f"${row.notional:,.0f}")
        if quote is None:
            c[3].markdown("now: the engine runs in another process; Approve re-prices it there")
        elif quote.price_now is None:
            c[3].markdown("now: no current price")
        else:
            move = quote.move or 0.0
            colour = "green" if move > 0 else "red" if move < 0 else "gray"
            c[3].markdown(f"now **${quote.price_now:,.2f}** :{colour}[{signed_pct(move, 2)}] since the signal")
        if quote is not None and row.kind != "exit":
            if quote.ok:
                st.markdown(f"Approve sends: **{quote.qty:g} sh** (${quote.notional:,.0f}) · stop "
                            f"**${quote.stop_price:,.2f}** · take-profit **${quote.take_profit_price:,.2f}**"
                            + (f" · risk after fill {quote.risk_after:.2%}" if quote.risk_after is not None else ""))
            else:
                st.markdown(f":red[Approve would be refused now: {quote.note}]")
        elif row.kind == "exit":
            st.markdown(f"Approve sends: sell the whole {row.symbol} position at market")
        st.caption(f"`{row.id}` · {row.reason}")
        open_ = row.expires_in_s > 0
        b = st.columns([4, 1.2, 1.2], vertical_alignment="center")
        b[0].markdown(f"expires in **{views.countdown_text(row.expires_in_s)}**" if open_ else "**expired**")
        b[1].button("Approve", key=f"approve_{row.id}", type="primary", on_click=decide,
                    args=([(row.id, row.symbol)], "approve"), disabled=not open_, width="stretch")
        b[2].button("Reject", key=f"reject_{row.id}", on_click=decide, args=([(row.id, row.symbol)], "reject"),
                    width="stretch")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def queue() -> None:
    now, wall_now, speed = ctx.now(), ctx.wall_now(), ctx.speed()
    params = views.live_params(ctx.store)
    answers.show(SCOPE)
    if params.get("auto_mode"):
        st.info("AUTO_MODE is on: intents are submitted without approval.")
    if params.get("paused"):
        st.warning("Trading is paused: approving an entry is refused until you resume.")
    ttl = ctx.settings.intent_ttl_s
    st.caption(f"Each intent waits {views.countdown_text(ttl)} of real time for your decision"
               + (f" (the market runs ×{speed:g}: {ttl * speed / 60:,.0f} market minutes)" if speed != 1 else "")
               + ". Approve re-prices the order at the price of the moment (shares, stop, take-profit), re-checks "
               f"it and sends it; a buy whose price fell more than {ctx.settings.approval_max_move_pct:.1%} since "
               "the signal, or through its stop, is refused.")
    pending = views.pending_intents(ctx.store, now, wall_now, speed)
    st.subheader(f"Pending intents ({len(pending)})")
    if pending.empty:
        st.caption("Nothing waiting for approval.")
    else:
        both = list(zip(pending["id"], pending["symbol"], strict=True))
        b = st.columns([1.4, 1.4, 5], vertical_alignment="center")
        b[0].button(f"Approve all ({len(both)})", key="bulk_approve", type="primary", on_click=decide,
                    args=(both, "approve"), width="stretch",
                    help="Each one is re-priced and re-checked against the risk limits.")
        b[1].button(f"Reject all ({len(both)})", key="bulk_reject", on_click=decide, args=(both, "reject"),
                    width="stretch")
    quotes = ctx.runtime.quote_pending() if ctx.runtime is not None and not pending.empty else {}
    for row in pending.itertuples():
        card(row, quotes.get(row.id) if ctx.runtime is not None else None)
    recent_table()


queue()
