"""Every CSV the app writes or offers goes through ``csv_safe``: a spreadsheet opening it runs no formula.

A cell whose text starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets (``=HYPERLINK("http://…","n")`` in a run's name, a symbol in a bar file). Such a
text cell gets a leading ``'`` (OWASP "CSV injection"): the spreadsheet shows the text as typed. Numbers stay
numbers (a negative P&L is not text and is written as it is), and so does text that is a plain number
(``-0.05``, ``-1,234.50``): no formula can hide in it. Column names are cells too.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*)?(?:\.\d+)?(?:[eE][+-]?\d+)?%?")


def escape_cell(value: Any) -> Any:
    """``value`` with a ``'`` in front when it is text a spreadsheet would read as a formula; anything else as is."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    if any(ch.isdigit() for ch in value) and _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names are escaped (``escape_cell``); numbers untouched."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            out[col] = s.map(escape_cell).astype(s.dtype if pd.api.types.is_string_dtype(s) else object)
    out.columns = [escape_cell(c) for c in out.columns]
    return out


def to_csv_bytes(df: pd.DataFrame, **kw: Any) -> bytes:
    """``df`` as UTF-8 CSV without its index, escaped by ``csv_safe``: what every CSV download of the app is."""
    return csv_safe(df).to_csv(index=False, **kw).encode("utf-8")
