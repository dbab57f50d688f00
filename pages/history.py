"""Trade history: orders, fills, positions, equity curve, per-trade P&L with MAE/MFE, CSV export."""

import streamlit as st

from core import views
from core.research import kpi
from ui import charts
from ui.positions import positions_panel
from ui.state import load_context

ctx = load_context()
st.title("Trade history")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def history() -> None:
    m = kpi.summary(ctx.store)
    trades = views.trades(ctx.store)
    c = st.columns(7)
    c[5].metric("Orders", ctx.store.scalar("SELECT COUNT(*) FROM orders") or 0)
    c[6].metric("Open positions", ctx.store.scalar("SELECT COUNT(*) FROM positions WHERE qty > 0") or 0)
    c[0].metric("Closed trades", m["trades"])
    c[1].metric("Realised P&L", views.money(m["pnl_realized"]), help="the closed trades' P&L")
    c[2].metric("Win rate", views.percent(m["win_rate"]))
    c[3].metric("Max drawdown", f"{m['max_drawdown']:.2%}")
    c[4].metric("Profit factor", views.factor(m["profit_factor"]))
    st.plotly_chart(charts.equity_line(views.equity_curve(ctx.store)), theme=None, key="equity_chart")
    positions_panel(ctx)  # table, Close per position, Flatten all (ui/positions.py)
    st.subheader("Orders")
    st.dataframe(views.orders(ctx.store), hide_index=True, key="orders")
    st.subheader("Fills")
    st.dataframe(views.fills(ctx.store), hide_index=True, key="fills")
    st.subheader("Closed trades (P&L, MAE/MFE)")
    st.dataframe(trades, hide_index=True, key="trades", column_config={
        "pnl": st.column_config.NumberColumn(format="$%.2f"), "ret": st.column_config.NumberColumn(format="%.3f"),
        "mae": st.column_config.NumberColumn(format="%.4f"), "mfe": st.column_config.NumberColumn(format="%.4f")})


history()
st.download_button("Download trades CSV", views.trades_csv(ctx.store), file_name="trades.csv", mime="text/csv",
                   key="trades_csv", help="entry_ts and exit_ts in UTC, entry_ts_ny and exit_ts_ny in New York time "
                                          "(as the table above)")
