"""ui.answers: the answer to a click stays on its page through reruns until dismissed or replaced (AppTest)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _page() -> None:
    import streamlit as st

    from ui import answers

    def refuse() -> None:
        answers.say("sidebar", "cooldown_s not changed", [("error", "refused: cooldown_s 99999 above 1800")])

    def approve_all() -> None:
        answers.say("approvals", "Approve: 2 intents, 1 submitted, 1 not",
                    [("success", "**NVDA**: submitted: BUY 266 NVDA"), ("error", "**SQQQ**: refused: paused (paused)")])

    st.button("refuse", key="refuse", on_click=refuse)
    st.button("approve all", key="approve_all", on_click=approve_all)
    answers.show("sidebar", st.sidebar)
    answers.show("approvals")


def texts(at: AppTest) -> list[str]:
    return [m.value for m in (*at.success, *at.error, *at.sidebar.error)]


def test_an_answer_stays_through_reruns_until_dismissed_or_replaced():
    at = AppTest.from_function(_page, default_timeout=60)  # a busy machine: never the 3 s default
    at.run()
    at.button(key="refuse").click().run()
    said = [e.value for e in at.sidebar.error]
    assert said == ["cooldown_s not changed: refused: cooldown_s 99999 above 1800"]
    for _ in range(2):
        at.run()
        assert [e.value for e in at.sidebar.error] == said
    at.button(key="approve_all").click().run()  # another scope: both stay
    assert [s.value for s in at.success] == ["**NVDA**: submitted: BUY 266 NVDA"]
    assert [e.value for e in at.main.error] == ["**SQQQ**: refused: paused (paused)"]
    assert any("Approve: 2 intents, 1 submitted, 1 not" in m.value for m in at.markdown)
    assert [e.value for e in at.sidebar.error] == said
    at.button(key="refuse").click().run()  # the next answer in a scope replaces the last one, with a new Dismiss
    dismiss = [b.key for b in at.button if b.key.startswith("dismiss_sidebar_")]
    assert len(dismiss) == 1 and [e.value for e in at.sidebar.error] == said
    at.button(key=dismiss[0]).click().run()
    assert not at.sidebar.error and at.success  # dismissing one scope leaves the other
