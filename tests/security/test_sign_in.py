"""The sign-in gate (issue 30): wrong passwords are counted per client address and for the whole server
process, not per browser session, so a reload does not start the count again; each failure is logged; any bind
address that is not loopback (the empty one too: it listens on every interface) needs APP_PASSWORD; nothing of
the configuration, and no traceback, reaches a browser that has not signed in.

AppTest sessions are new browser sessions of one server process (from this machine: ``local``); the guard's
clock is moved by hand, never waited on."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config
from streamlit.testing.v1 import AppTest

from core.runtime import stop_all
from tests.test_app import APP
from ui import auth

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "right-horse-battery-31"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SIM_START", "2025-03-04")
    monkeypatch.delenv("APP_PASSWORD", raising=False)
    st.cache_resource.clear()
    stop_all()
    yield
    st.cache_resource.clear()
    stop_all()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth.GUARD, "clock", c)
    return c


@pytest.fixture
def bind(monkeypatch):
    """Set ``server.address`` for the test (as ``--server.address`` would), restored after."""
    old = config.get_option("server.address")
    yield lambda address: config.set_option("server.address", address)
    config.set_option("server.address", old)


def session() -> AppTest:
    """A new browser session (a reload, a new tab) of the same server process."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def sign_in(password: str) -> AppTest:
    at = session()
    at.text_input[0].input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def signed_in(at: AppTest) -> bool:
    return not any(t.label == "Password" for t in at.text_input) and bool(at.sidebar.toggle)


def test_twenty_wrong_passwords_across_reloads_are_locked_out_and_logged(app_env, clock, monkeypatch, caplog):
    monkeypatch.setenv("APP_PASSWORD", PASSWORD)
    caplog.set_level(logging.INFO, logger="ui.auth")
    screens = [sign_in(f"guess-{k:02d}") for k in range(20)]  # each one from a new session: a reload
    assert all("Wrong password." in errors(at) for at in screens[:4])
    # the fifth failure locks this address out; the fifteen next are not even checked
    assert all("Too many wrong passwords: try again in 30 s" in errors(at) for at in screens[4:]), \
        [errors(at) for at in screens]
    failed = [r.getMessage() for r in caplog.records if "sign-in failed" in r.getMessage()]
    refused = [r.getMessage() for r in caplog.records if "sign-in refused" in r.getMessage()]
    assert len(failed) == 5 and len(refused) == 15, (failed, refused)
    assert "from local" in failed[0] and "(1 failures" in failed[0] and "locked out for 30 s" in failed[4]
    assert all("guess-" not in r.getMessage() for r in caplog.records)  # never what was typed
    # the right password while locked out is refused like any other
    at = sign_in(PASSWORD)
    assert not signed_in(at) and "Too many wrong passwords" in errors(at)
    # the lockout doubles with each failure after it: 30 s, then 60 s
    clock.t += 31
    at = sign_in("guess-20")
    assert "try again in 60 s" in errors(at)
    clock.t += 59
    assert not signed_in(sign_in(PASSWORD))
    clock.t += 2
    at = sign_in(PASSWORD)
    assert signed_in(at) and not at.error
    assert auth.GUARD.failures("local") == 0  # a success starts the count again
    assert any("sign-in from local" in r.getMessage() for r in caplog.records)


def test_failures_count_per_address_and_for_the_whole_process():
    c = Clock()
    g = auth.LoginGuard(clock=c)
    for _ in range(auth.MAX_TRIES):
        g.failed("10.0.0.7")
    assert g.locked_for("10.0.0.7") == auth.LOCKOUT_S and g.locked_for("10.0.0.8") == 0
    # an attacker changing addresses: every address is locked once the process has seen enough failures
    for k in range(auth.GLOBAL_MAX_TRIES - auth.MAX_TRIES):
        g.failed(f"10.1.0.{k}")
    assert g.locked_for("192.0.2.1") == auth.LOCKOUT_S
    c.t += auth.LOCKOUT_S
    assert g.locked_for("192.0.2.1") == 0
    for _ in range(20):  # the lockout doubles and stops at its cap
        c.t += auth.LOCKOUT_MAX_S
        _, wait = g.failed("10.0.0.7")
    assert wait == auth.LOCKOUT_MAX_S


def test_the_store_keeps_a_bounded_number_of_addresses(monkeypatch):
    monkeypatch.setattr(auth, "ADDRESSES_KEPT", 50)
    g = auth.LoginGuard(clock=Clock())
    for k in range(200):
        g.failed(f"10.2.{k // 250}.{k % 250}")
    assert len(g._by_address) <= 51 and g.failures(auth.GLOBAL) == 200


def test_any_bind_address_but_loopback_needs_a_password(app_env, bind, monkeypatch):
    # the empty address listens on every interface: it was taken for loopback and showed the whole app
    for address in ("", "0.0.0.0", "192.168.1.20", "::"):
        bind(address)
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert "no APP_PASSWORD is set" in errors(at), address
        assert not at.metric and not at.button and not at.sidebar.toggle, address  # nothing of the app
    for address in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        bind(address)
        assert signed_in(session()), address
    bind("")
    monkeypatch.setenv("APP_PASSWORD", PASSWORD)
    at = session()
    assert [t.label for t in at.text_input] == ["Password"] and not at.sidebar.toggle
    assert signed_in(sign_in(PASSWORD))


def test_error_details_are_off_in_the_app_config():
    # "none": no message, type or traceback in the browser (false would still mean "stacktrace")
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["showErrorDetails"] == "none"


def test_an_uncaught_error_shows_no_detail_in_the_browser(tmp_path, caplog):
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('detail-canary-5521 at redis://:pw@10.0.0.5/0')\n")
    at = AppTest.from_file(str(script), default_timeout=30)
    at.run()
    shown = " ".join(f"{e.message} {e.stack_trace} {getattr(e.proto, 'type', '')}" for e in at.exception)
    assert at.exception and "encountered an error" in shown
    assert "detail-canary-5521" not in shown and "RuntimeError" not in shown and "boom.py" not in shown


def test_a_configuration_error_shows_detail_only_where_no_sign_in_is_asked(app_env, bind, monkeypatch, caplog):

    caplog.set_level(logging.ERROR)
    monkeypatch.setenv("TIER_A_TOKENS", "6  # Tier A")
    # loopback and no APP_PASSWORD: whoever sees the page runs the server; the details help them fix it
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert "TIER_A_TOKENS='6  # Tier A': inline comment" in errors(at)
    for how in ("password", "network"):
        # logged once per browser session: each new AppTest is a new session and logs its own line
        caplog.clear()
        if how == "password":
            monkeypatch.setenv("APP_PASSWORD", PASSWORD)
        else:
            monkeypatch.delenv("APP_PASSWORD")
            bind("0.0.0.0")
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert "cannot start" in errors(at) and "TIER_A" not in errors(at) and "Tier A" not in errors(at), how
        assert not at.caption and not at.text_input, how
        assert "TIER_A_TOKENS='6  # Tier A'" in caplog.text, how  # the log has it, for whoever runs the server
