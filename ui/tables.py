"""Paged tables: a long history is shown a page at a time, read with LIMIT/OFFSET (issue 17); column widths that
fit a 1280 px window (issue 27)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
import streamlit as st

from core import views
from core.engine.intents import EXPIRED, FAILED, REJECTED, SUBMITTED, SUBMITTING
from core.rules.reasons import REASONS


def page_picker(rows: int, key: str, *, what: str = "rows", size: int = views.PAGE_ROWS) -> int:
    """The 1-based page of ``rows`` to show (newest first); a page selector only when there is more than one."""
    pages = views.page_count(rows, size)
    if pages == 1:
        st.caption(f"{rows:,} {what}")
        return 1
    c = st.columns([1, 5], vertical_alignment="center")
    page = int(c[0].number_input("Page", min_value=1, max_value=pages, value=1, step=1, key=key,
                                 help=f"{size} {what} a page, newest first"))
    page = min(max(page, 1), pages)  # a stored value past the last page after a table shrank
    first = (page - 1) * size + 1
    c[1].caption(f"{what} {first:,}–{min(page * size, rows):,} of {rows:,}, newest first (page {page} of {pages:,})")
    return page


# ---------------------------------------------------------------- columns that fit
# A table's column is sized by the browser once, from the rows of its first render, and keeps that width while a
# fragment refreshes the rows: a column that was empty or short then ("your click", a "reason" of below_cutoff)
# cuts what arrives later. Columns whose content grows get a width in pixels instead, from the longest text the
# column can hold. The model of the table font (Source Sans, 14 px), measured on docs/screens at 1280x800: about
# 6.1 px a digit and 7.1 px a letter, plus the cell's padding; the main block beside the open sidebar is 820 px.
CHAR_PX = 7.2
CELL_PAD_PX = 18
MAIN_PX_1280 = 820


def text_px(text: Any) -> int:
    """The width in pixels a cell needs to show ``text`` whole."""
    return math.ceil(len(str(text)) * CHAR_PX) + CELL_PAD_PX


def fit_width(header: str, values: Iterable[Any] = (), longest: Iterable[str] = ()) -> int:
    """Pixels for a column: its header, the values shown now and the longest ones it may hold later, whole."""
    return max(text_px(v) for v in [header, *[v for v in values if v is not None], *longest])


def text_column(name: str, values: Iterable[Any] = (), longest: Iterable[str] = (), **kw: Any) -> Any:
    """A text column whose width is ``fit_width``."""
    return st.column_config.TextColumn(name, width=fit_width(name, values, longest), **kw)


DECIDED = (SUBMITTING, SUBMITTED, REJECTED, EXPIRED, FAILED)  # a decided intent's status
# the longest reasons a decision stores: a rule's name, and a max-positions refusal with the approvals holding slots
LONGEST_REASONS = [name for name, _ in REASONS.values()] + ["risk_max_positions (12 pending approvals)"]


def _texts(df: pd.DataFrame, col: str) -> list[str]:
    return [str(v) for v in df[col] if v is not None] if col in df else []


def recent_decision_columns(df: pd.DataFrame) -> dict[str, Any]:
    """Approvals' Recent decisions: the status and the answer to a click sized for what may come (statuses, "approve:
    already submitted", a refusal shown now), the id whole."""
    return {
        "when": text_column("when", _texts(df, "when")), "symbol": text_column("symbol", _texts(df, "symbol")),
        "side": text_column("side", _texts(df, "side")),
        "qty": st.column_config.NumberColumn("qty", width=fit_width("qty", [f"{q:.6g}" for q in df.get("qty", [])],
                                                                    ["100000"])),
        "status": text_column("status", _texts(df, "status"), DECIDED),
        "your click": text_column("your click", _texts(df, "your click"), ["approve: already submitted"]),
        "id": st.column_config.TextColumn("id", width=250),  # whole, never cut mid-ticker
        "note": st.column_config.TextColumn("note", width="medium"),
    }


def decision_stream_columns(stream: pd.DataFrame) -> dict[str, Any]:
    """Live signals' decision stream: every column whole, the reason sized for the longest it may hold."""
    return {
        "ts": text_column("ts", _texts(stream, "ts")), "symbol": text_column("symbol", _texts(stream, "symbol")),
        "tier": text_column("tier", _texts(stream, "tier"), ["Bench"]),
        "score": st.column_config.NumberColumn("score", format="%+.3f", width=text_px("+0.000")),
        "cutoff": st.column_config.NumberColumn("cutoff", format="%.2f", width=text_px("cutoff")),
        "decision": text_column("decision", _texts(stream, "decision"), ["suppressed", "actionable"]),
        "reason": text_column("reason", _texts(stream, "reason"), LONGEST_REASONS),
        "action": text_column("action", _texts(stream, "action")),
    }
