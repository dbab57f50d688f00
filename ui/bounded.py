"""Sliders of the live-tunable settings, drawn from core/bounds.py's table (the sidebar's and the Research page's).

A slider never shows another number than the one it stands for: a value from outside the table's range (a
database written before the table) widens that slider's range to hold it, with a warning, instead of being
clamped to the nearest end.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.bounds import Bound


def typed(b: Bound, value: Any) -> int | float:
    """``value`` as the slider of ``b`` takes it: an int for a whole-number setting, else a float."""
    return int(value) if b.is_int else float(value)


def label(b: Bound) -> str:
    return f"{b.label} ({b.unit})" if b.unit else b.label


def slider_args(b: Bound, value: Any) -> dict[str, Any]:
    """min_value, max_value, step and format of the slider of ``b`` showing ``value``."""
    lo, hi = b.widened(typed(b, value))
    return {"min_value": lo, "max_value": hi, "step": typed(b, b.step), "format": b.fmt}


def warn_outside(where: Any, b: Bound, value: Any) -> None:
    if not b.contains(typed(b, value)):
        where.warning(f"{b.label} is {b.show(typed(b, value))}, outside its range {b.range_text()}: the slider is "
                      f"widened to show it. Move it back into the range.", icon=":material/warning:")


def slider(where: Any, b: Bound, value: Any, *, key: str, **kwargs: Any) -> Any:
    """A slider of ``b`` in ``where`` (``st``, ``st.sidebar``, a column) starting at ``value``."""
    got = where.slider(label(b), value=typed(b, value), key=key, **slider_args(b, value), **kwargs)
    warn_outside(where, b, value)
    return got


def state_slider(where: Any, b: Bound, value: Any, *, key: str, **kwargs: Any) -> Any:
    """As ``slider``, for a widget whose value is written to ``st.session_state[key]`` every run (the sidebar's
    sliders copy the engine's value in, so another tab's change shows)."""
    st.session_state[key] = typed(b, value)
    got = where.slider(label(b), key=key, **slider_args(b, value), **kwargs)
    warn_outside(where, b, value)
    return got
