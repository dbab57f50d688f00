"""Answers to the trader's clicks (Approve, Reject, Approve all, Close, Flatten all, a slider value): each stays on
the page where the click was made until the trader dismisses it or the next answer replaces it.

An answer lives in the browser session (``st.session_state``), not in a widget: the page's fragments rerun every
UI_REFRESH_S and the app reruns when the pending count changes, and neither may take it away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

LEVELS = ("success", "info", "warning", "error")


@dataclass(frozen=True)
class Answer:
    title: str
    lines: tuple[tuple[str, str], ...]  # (level, text), one per intent or command
    serial: int  # a new answer gets a new Dismiss button (a stale click never dismisses the next answer)

    @property
    def level(self) -> str:
        """The answer's colour: its worst line."""
        return max((lvl for lvl, _ in self.lines), key=LEVELS.index, default="info")


def _key(scope: str) -> str:
    return f"_answer_{scope}"


def level_of(res: dict[str, Any]) -> str:
    """How a command's answer reads: refused or failed (error), already done elsewhere (warning), queued for an
    engine in another process (info), done (success)."""
    text = str(res.get("result") or res.get("status") or "")
    if res.get("status") == "new":
        return "info"
    if res.get("status") == "failed" or text.startswith(("refused", "rejected by the broker", "expired")) \
            or "broker problem" in text:
        return "error"
    if text.startswith(("already", "submit pending retry")):
        return "warning"
    return "success"


def say(scope: str, title: str, lines: list[tuple[str, str]]) -> None:
    """Show ``lines`` under ``title`` in ``scope`` (a page or panel) until dismissed or replaced."""
    serial = int(st.session_state.get("_answer_serial", 0)) + 1
    st.session_state["_answer_serial"] = serial
    st.session_state[_key(scope)] = Answer(title, tuple(lines), serial)


def dismiss(scope: str) -> None:
    st.session_state.pop(_key(scope), None)


def current(scope: str) -> Answer | None:
    return st.session_state.get(_key(scope))


def show(scope: str, where: Any = None) -> Answer | None:
    """Draw the scope's answer (if any) with its Dismiss button, in ``where`` (a container; the page by default)."""
    answer = current(scope)
    if answer is None:
        return None
    box = (where or st).container(border=True, key=f"answer_{scope}")
    c = box.columns([12, 1.4], vertical_alignment="center")
    icon = {"success": ":material/check_circle:", "info": ":material/info:", "warning": ":material/warning:",
            "error": ":material/block:"}[answer.level]
    c[1].button("Dismiss", key=f"dismiss_{scope}_{answer.serial}", on_click=dismiss, args=(scope,))
    if len(answer.lines) == 1:  # one command, one sentence: "Close AAPL: closing AAPL x112 (order ...)"
        level, text = answer.lines[0]
        getattr(c[0], level)(f"{answer.title}: {text}")
        return answer
    c[0].markdown(f"{icon} **{answer.title}**")
    for level, text in answer.lines:
        getattr(box, level)(text)
    return answer
