"""Paged tables: a long history is shown a page at a time, read with LIMIT/OFFSET (issue 17)."""

from __future__ import annotations

import streamlit as st

from core import views


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
