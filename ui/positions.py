"""The open-positions block of the Trade history page: the table (core.views.open_positions), a Close button per
position and Flatten all, each behind a confirmation, each sent as a command the engine applies
(core.engine.closing). The engine, not this page, makes a double click or a second tab harmless: it refuses a second
close while one is live, and each close's client order id is deterministic.
"""

from __future__ import annotations

import streamlit as st

from core import views
from ui import answers
from ui.state import AppContext, send_command

_ASK = "_positions_ask"  # ("close", symbol) or ("flatten", "") while a confirmation is shown
SCOPE = "positions"  # the answer to the last Close / Flatten all stays in this panel (ui.answers)

COLUMN_CONFIG = {
    "avg_entry": st.column_config.NumberColumn("avg entry", format="dollar"),
    "last_price": st.column_config.NumberColumn("last", format="dollar"),
    "market_value": st.column_config.NumberColumn("market value", format="dollar"),
    "unrealized_pnl": st.column_config.NumberColumn("unrealised P&L", format="dollar"),
    "unrealized_pct": st.column_config.NumberColumn("unrealised %", format="percent"),
    "stop_price": st.column_config.NumberColumn("stop", format="dollar"),
    "to_stop_pct": st.column_config.NumberColumn("to stop", format="percent",
                                                 help="How far the last price may fall before the stop fires"),
    "take_profit_price": st.column_config.NumberColumn("take-profit", format="dollar"),
    "to_take_profit_pct": st.column_config.NumberColumn("to take-profit", format="percent",
                                                        help="How far the last price must rise to the take-profit"),
    "age_s": None, "price_at": st.column_config.TextColumn("last at (ET)"),
}


def _confirm_key(kind: str, symbol: str) -> str:
    return f"confirm_{kind}_{symbol}" if symbol else f"confirm_{kind}"


def _ask(kind: str, symbol: str) -> None:
    st.session_state[_ASK] = (kind, symbol)


def _dismiss() -> None:
    ask = st.session_state.pop(_ASK, None)
    if ask:
        st.session_state.pop(_confirm_key(*ask), None)


def _send(ctx: AppContext, kind: str, symbol: str) -> None:
    what = f"Close {symbol}" if kind == "close" else "Flatten all"
    if not st.session_state.get(_confirm_key(kind, symbol)):  # the button is disabled until then; belt and braces
        answers.say(SCOPE, what, [("error", "tick “I confirm” first")])
        return
    if kind == "close":
        res = send_command(ctx, "close_position", {"symbol": symbol})
    else:
        res = send_command(ctx, "flatten_all", {})
    answers.say(SCOPE, what, [(answers.level_of(res), str(res.get("result") or res.get("status")))])
    _dismiss()


def _confirmation(ctx: AppContext, df) -> None:  # noqa: ANN001 (a DataFrame)
    kind, symbol = st.session_state[_ASK]
    with st.container(border=True, key="positions_confirm"):
        if kind == "close":
            rows = df[df["symbol"] == symbol]
            if rows.empty:  # closed meanwhile (a fill, another tab)
                st.info(f"{symbol} is no longer held.")
                st.button("Dismiss", key="confirm_cancel", on_click=_dismiss)
                return
            r = rows.iloc[0]
            st.warning(f"Close **{symbol}**: sell {r['qty']:g} shares at market (last ${r['last_price']:,.2f}, "
                       f"about ${r['market_value']:,.2f}, unrealised {views.money(r['unrealized_pnl'])}). "
                       f"Its stop-loss and take-profit orders are cancelled.")
            go = f"Close {symbol} now"
        else:
            held = ", ".join(f"{s} x{q:g}" for s, q in zip(df["symbol"], df["qty"], strict=True)) or "nothing"
            st.error(f"**Flatten all**: sell every position at market ({held}), cancel every open order and "
                     f"**pause new entries** (resume with the sidebar's Pause switch).")
            go = "Flatten all now"
        ok = st.checkbox("I confirm", key=_confirm_key(kind, symbol))
        c = st.columns([2, 1, 3])
        c[0].button(go, key="confirm_go", type="primary", disabled=not ok, on_click=_send, args=(ctx, kind, symbol))
        c[1].button("Cancel", key="confirm_cancel", on_click=_dismiss)


def positions_panel(ctx: AppContext) -> None:
    """Open positions with their P&L, distances to stop and take-profit and age; Close and Flatten all."""
    df = views.open_positions(ctx.store, ctx.now())
    st.subheader("Open positions")
    answers.show(SCOPE)
    if df.empty:
        st.caption("No open positions.")
    else:
        st.dataframe(df.drop(columns=["age_s"]), hide_index=True, key="positions",
                     column_config={k: v for k, v in COLUMN_CONFIG.items() if k != "age_s"})
        c = st.columns(min(len(df), 6) + 1)
        for i, row in enumerate(df.itertuples()):
            closing = bool(row.closing)
            c[i % 6].button(f"Closing {row.symbol}…" if closing else f"Close {row.symbol}", key=f"close_{row.symbol}",
                            disabled=closing, on_click=_ask, args=("close", row.symbol),
                            help=row.closing if closing else f"Sell all {row.qty:g} {row.symbol} at market")
    st.button("Flatten all", key="flatten_all", type="primary", on_click=_ask, args=("flatten", ""),
              help="Close every position, cancel every open order and pause new entries")
    if st.session_state.get(_ASK):
        _confirmation(ctx, df)
