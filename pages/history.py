"""Trade history: orders, fills, positions, equity curve, per-trade P&L with MAE/MFE, CSV export.

Built for a long history (issue 17): the header figures are aggregated in SQL, the curve is drawn from at most
``views.MAX_CURVE_POINTS`` samples, and the tables are read one page (``views.PAGE_ROWS`` rows) at a time."""

import streamlit as st

from core import views
from core.state.store import Store
from ui import charts
from ui.positions import positions_panel
from ui.session_replay import session_replay_panel
from ui.state import load_context
from ui.tables import page_picker

ctx = load_context()
st.title("Trade history")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def history() -> None:
    m = views.trade_summary(ctx.store)
    # two rows of four: a seventh of a 1280 px page holds about five digits, "100,000" or "-$1.67k" is cut
    c = [*st.columns(4), *st.columns(4)]
    c[0].metric("Closed trades", f"{m['trades']:,}")
    # the short form ($1.67k), the exact figure on hover
    c[1].metric("Realised P&L", views.money_short(m["pnl_realized"]),
                help=f"the closed trades' P&L: {views.money(m['pnl_realized'])}")
    c[2].metric("Win rate", views.percent(m["win_rate"]))
    c[3].metric("Profit factor", views.factor(m["profit_factor"]),
                help="gross win / gross loss; – with no closed trade or no losing trade")
    c[4].metric("Max drawdown", views.percent(m["max_drawdown"], 2))
    c[5].metric("Orders", f"{views.row_count(ctx.store, 'orders'):,}")
    c[6].metric("Open positions", ctx.store.scalar("SELECT COUNT(*) FROM positions WHERE qty > 0") or 0)
    curve = views.equity_curve_sampled(ctx.store)
    st.plotly_chart(charts.equity_line(curve), theme=None, key="equity_chart")
    positions_panel(ctx)  # table, Close per position, Flatten all (ui/positions.py)
    st.subheader("Orders")
    page = page_picker(views.row_count(ctx.store, "orders"), "orders_page", what="orders")
    st.dataframe(views.orders_page(ctx.store, page), hide_index=True, key="orders")
    st.subheader("Fills")
    page = page_picker(views.row_count(ctx.store, "fills"), "fills_page", what="fills")
    st.dataframe(views.fills_page(ctx.store, page), hide_index=True, key="fills")
    st.subheader("Closed trades (P&L, MAE/MFE)")
    page = page_picker(m["trades"], "trades_page", what="trades")
    trades = views.trades_page(ctx.store, page)
    left, right = st.columns([3, 2])
    # as tall as the scatter beside it, shorter when there are only a few trades (no empty rows)
    left.dataframe(trades, hide_index=True, key="trades", height=min(340, 38 + 35 * max(len(trades), 1)),
                   column_config={
                       "pnl": st.column_config.NumberColumn(format="$%.2f"),
                       "ret": st.column_config.NumberColumn(format="%.3f"),
                       "mae": st.column_config.NumberColumn(format="%.4f"),
                       "mfe": st.column_config.NumberColumn(format="%.4f")})
    with right:
        st.plotly_chart(charts.mae_mfe_scatter(trades, f"MAE vs MFE, the {len(trades):,} trades listed"),
                        theme=None, key="mae_mfe_chart")


def trades_csv() -> bytes:
    # built when the button is clicked, on Streamlit's thread for it: its own read-only connection
    store = Store(ctx.settings.db_path, readonly=True)
    try:
        return views.trades_csv(store)
    finally:
        store.close()


history()
st.download_button("Download trades CSV", trades_csv, file_name="trades.csv", mime="text/csv", key="trades_csv",
                   help="entry_ts and exit_ts in UTC, entry_ts_ny and exit_ts_ny in New York time (as the table above)")
session_replay_panel(ctx.settings, ctx.store)  # issue 28: did live do what research says it would?
