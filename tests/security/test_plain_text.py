"""Issue 30, exports and text: a symbol, a file name or a run name is shown as typed, never as Markdown: a bar
file's symbol ``[x](http://evil)`` is not a link in the file's summary, a run's name not in its caption."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.research import runs
from core.state.store import Store
from tests.security.helpers import DAY, bars_bytes, one_session_universe, research_page, stop
from ui.text import plain, plain_list

LINK = "[x](http://evil)"


@pytest.mark.parametrize(("raw", "shown"), [
    (LINK, r"\[x\](http\://evil)"),
    ("my_bars*.csv", r"my\_bars\*.csv"),
    ("![i](http://e/p.png)", r"!\[i\](http\://e/p.png)"),
    (":red[alarm] $x$ <b>", r":red\[alarm\] \$x\$ \<b\>"),
    ("# big\n- item", r"\# big - item"),
    ("see www.evil.example", r"see www\.evil.example"),
    ("`code`", r"\`code\`"),
])
def test_plain_escapes_what_markdown_would_render(raw, shown):
    assert plain(raw) == shown


def test_plain_list_is_bounded():
    assert plain_list(["A", "B_C", "D"], 2) == r"A, B\_C … and 1 more"
    assert plain_list(["A"], 2) == "A"


def test_a_file_symbol_written_as_a_link_is_shown_as_text_in_the_summary(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.csv").write_bytes(bars_bytes(["AAA", LINK], minutes=30))
    at = research_page(monkeypatch, tmp_path, data)
    try:
        at.radio(key="r_source").set_value("file").run()
        at.selectbox(key="r_file").set_value("mine.csv").run()
        assert not at.exception, at.exception
        summary = next(c.value for c in at.caption if c.value.startswith("mine.csv:"))
        assert r"\[x\](http\://evil)" in summary and LINK not in summary, summary
        one_session_universe(at, "AAA")  # the link symbol is in no tier: listed as not replayed
        unused = next(c.value for c in at.caption if "not replayed" in c.value)
        assert r"\[x\](http\://evil)" in unused and LINK not in unused, unused
        for kind in ("markdown", "caption", "error", "warning", "info", "success"):
            assert not any(LINK in e.value for e in getattr(at, kind)), kind
    finally:
        stop()


def test_a_run_named_as_a_link_is_shown_as_text(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "r.db"))
    try:
        runs.save_run(store, name=LINK, kind="replay",
                      source={"kind": "synthetic", "seed": 7, "first": DAY.isoformat(), "last": DAY.isoformat(),
                              "sessions": 1}, params={"cutoff_delta": 0.0, "mixer_cooldown_s": 180},
                      metrics={"trades": 0}, created_at=datetime(2025, 3, 4, tzinfo=UTC))
    finally:
        store.close()
    at = research_page(monkeypatch, tmp_path, tmp_path / "data")
    try:
        caption = next(c.value for c in at.caption if c.value.startswith("#1 "))
        assert r"“\[x\](http\://evil)”" in caption and LINK not in caption, caption
    finally:
        stop()
