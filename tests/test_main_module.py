"""An AppTest run must not leave app.py installed as the process's ``__main__`` for the tests after it
(tests/conftest.py ``keep_the_real_main_module``): spawned children re-run ``__main__``."""

from __future__ import annotations

import sys

SEEN: dict[str, object] = {}


def test_an_app_run_installs_its_script_as_main(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core.runtime import stop_all
    from tests.helpers import APP

    monkeypatch.setenv("DB_PATH", str(tmp_path / "m.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    SEEN["before"] = sys.modules["__main__"]
    try:
        AppTest.from_file(APP, default_timeout=60).run()
    finally:
        st.cache_resource.clear()
        stop_all()
    assert getattr(sys.modules["__main__"], "__file__", None) == APP  # what Streamlit does, and never undoes


def test_the_next_test_has_the_process_main_back():
    assert "before" in SEEN, "runs after the test above (same file, file order)"
    assert sys.modules["__main__"] is SEEN["before"]
