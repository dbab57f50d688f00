"""Slack notifier against a real webhook receiver on 127.0.0.1 that the test scripts per request."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.config import load_settings
from core.services.slack import SlackNotifier, format_for_slack, forward_notifications, notifier_from_settings
from core.state.store import Store

SECRET = "xoxTOKENs3cr3tZ9"
PATH = f"/services/T0TEST/B0TEST/{SECRET}"
NOW = datetime(2025, 3, 10, 14, 31, tzinfo=UTC)  # 10:31 in New York (EDT)


class Receiver:
    """A Slack webhook stand-in: records JSON bodies; answers from a script, then 200 "ok"."""

    def __init__(self) -> None:
        self.script: list[tuple[Any, ...]] = []
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.arrived = threading.Event()  # set when a request has come in
        self.release = threading.Event()  # ends a hanging answer early (teardown)
        self.on_request: Callable[[], None] | None = None  # runs while the client is sure to be waiting
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.bodies.append(json.loads(raw))
                    receiver.paths.append(self.path)
                    step = receiver.script.pop(0) if receiver.script else ("ok",)
                if receiver.on_request is not None:
                    receiver.on_request()
                receiver.arrived.set()
                try:
                    if step[0] == "hang":
                        receiver.release.wait(step[1])
                        return
                    status = 200 if step[0] == "ok" else step[1]
                    body = b"ok" if step[0] == "ok" else step[2].encode()
                    headers = step[3] if len(step) > 3 else {}
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up first
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep the (secret) path off stderr

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def answer(self, *steps: tuple[Any, ...]) -> None:
        with self._lock:
            self.script.extend(steps)

    @property
    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]


OK = ("ok",)
E500 = ("status", 500, "internal_error")
E400 = ("status", 400, "invalid_payload")


def e429(retry_after: str) -> tuple[Any, ...]:
    return ("status", 429, "rate_limited", {"Retry-After": retry_after})


def hang(seconds: float = 10.0) -> tuple[Any, ...]:
    return ("hang", seconds)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.release.set()
    r.server.shutdown()
    r.server.server_close()


class Sleeps(list[float]):
    """An injected sleep that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def notifier(rx: Receiver, **kw: Any) -> tuple[SlackNotifier, Sleeps]:
    sleeps = Sleeps()
    kw.setdefault("timeout_s", 2.0)
    return SlackNotifier(rx.url, sleep=sleeps, **kw), sleeps


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "t.db")
    yield s
    s.close()


def add_notes(store: Store, *texts: str, level: str = "info") -> None:
    for t in texts:
        store.notify(level, t, NOW)
    store.commit()


def cursor(store: Store) -> int:
    return int(store.get_meta("slack_cursor") or 0)


# ---------------------------------------------------------------- formatting and payload
def test_format_emoji_time_headline_and_escaping() -> None:
    ts = NOW.isoformat()
    assert format_for_slack("warning", "protection signal_quality fired: win rate < 30% & falling", ts) == (
        ":warning: *protection signal_quality fired* (10:31 ET): win rate &lt; 30% &amp; falling")
    assert format_for_slack("info", "protection x released by ui", ts) == (
        ":information_source: (10:31 ET) protection x released by ui")
    assert format_for_slack("error", "job tick: <boom>", ts).startswith(":rotating_light: *job tick* (10:31 ET): ")
    assert format_for_slack("error", "job tick: <boom>", ts).endswith("&lt;boom&gt;")
    # January is EST (UTC-5): the time follows New York, not a fixed offset
    assert "(09:05 ET)" in format_for_slack("info", "x: y", "2025-01-06T14:05:00+00:00")
    assert "(09:05 ET)" in format_for_slack("info", "x: y", "2025-01-06T14:05:00")  # naive = UTC
    assert format_for_slack("debug", "odd level", "not a time") == ":grey_question: odd level"


def test_format_cuts_long_text_without_splitting_an_entity() -> None:
    out = format_for_slack("info", "briefing: " + "a" * 5000, NOW.isoformat())
    assert len(out) == 3000 and out.endswith("…")
    for n in range(2990, 3000):  # wherever the cut lands, no half "&amp;" is left behind
        out = format_for_slack("info", "x" * n + "&" * 50, NOW.isoformat())
        assert len(out) <= 3000
        body = out.removesuffix("…")
        assert body.replace("&amp;", "").count("&") == 0, n


def test_payload_is_json_text_with_the_formatted_message(rx: Receiver) -> None:
    n, _ = notifier(rx)
    text = format_for_slack("warning", "stop_loss exit AAPL: -2.1% <stop>", NOW.isoformat())
    assert n.send(text) is True
    assert rx.bodies == [{"text": ":warning: *stop_loss exit AAPL* (10:31 ET): -2.1% &lt;stop&gt;"}]
    assert rx.paths == [PATH]


# ---------------------------------------------------------------- retries
def test_retries_5xx_with_exponential_backoff(rx: Receiver) -> None:
    rx.answer(E500, E500, OK)
    n, sleeps = notifier(rx, retries=3, backoff_s=0.5)
    assert n.send("hello") is True
    assert rx.texts == ["hello"] * 3
    assert sleeps == [0.5, 1.0]


def test_backoff_is_capped_and_gives_up_after_retries(rx: Receiver) -> None:
    rx.answer(E500, E500, E500, E500, E500)
    n, sleeps = notifier(rx, retries=3, backoff_s=1.0, max_backoff_s=3.0)
    assert n.send("hello") is False
    assert len(rx.bodies) == 4  # one try plus three retries
    assert sleeps == [1.0, 2.0, 3.0]  # no sleep after the last attempt


def test_429_honours_retry_after(rx: Receiver) -> None:
    rx.answer(e429("2"), OK)
    n, sleeps = notifier(rx, backoff_s=0.5)
    assert n.send("hello") is True
    assert sleeps == [2.0]
    assert len(rx.bodies) == 2


def test_429_retry_after_is_capped_and_a_date_falls_back_to_backoff(rx: Receiver) -> None:
    rx.answer(e429("120"), e429("Wed, 21 Oct 2015 07:28:00 GMT"), OK)
    n, sleeps = notifier(rx, backoff_s=0.5, max_backoff_s=10.0)
    assert n.send("hello") is True
    assert sleeps == [10.0, 1.0]


@pytest.mark.parametrize("step", [E400, ("status", 403, "invalid_token"), ("status", 404, "no_service")])
def test_other_4xx_is_not_retried(rx: Receiver, step: tuple[Any, ...]) -> None:
    rx.answer(step, OK)
    n, sleeps = notifier(rx, retries=3)
    assert n.send("hello") is False
    assert len(rx.bodies) == 1 and sleeps == []


def test_connection_refused_is_retried_and_never_raises() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    n = SlackNotifier(f"http://127.0.0.1:{port}{PATH}", retries=2, backoff_s=0.25, sleep=sleeps)
    assert n.send("hello") is False
    assert sleeps == [0.25, 0.5]


def test_timeout_returns_false_instead_of_hanging(rx: Receiver) -> None:
    rx.answer(hang())
    n, sleeps = notifier(rx, timeout_s=0.3, retries=0)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(n.send("hello")), daemon=True)
    t.start()
    t.join(timeout=8.0)  # the receiver hangs 10 s: finishing earlier proves the client timeout ended it
    assert not t.is_alive()
    assert result == [False] and sleeps == []


def test_bad_construction_does_not_echo_the_url() -> None:
    with pytest.raises(ValueError) as exc:
        SlackNotifier(f"ftp://example.invalid{PATH}")
    assert SECRET not in str(exc.value)
    assert SECRET not in repr(SlackNotifier(f"http://127.0.0.1:9{PATH}"))


def test_notifier_from_settings() -> None:
    assert notifier_from_settings(load_settings()) is None
    s = load_settings(slack_webhook_url=SecretStr(f"http://127.0.0.1:9{PATH}"), slack_timeout_s=1.5,
                      slack_retries=1)
    n = notifier_from_settings(s)
    assert n is not None and (n.timeout_s, n.retries) == (1.5, 1)


# ---------------------------------------------------------------- forwarding the table
def test_forward_delivers_in_order_and_advances_the_cursor(rx: Receiver, store: Store) -> None:
    add_notes(store, "filled: BUY 10 AAPL", "stop_loss exit MSFT: -2%", "daily briefing 2025-03-10: flat")
    n, _ = notifier(rx)
    assert forward_notifications(store, n) == 3
    assert rx.texts == [
        ":information_source: *filled* (10:31 ET): BUY 10 AAPL",
        ":information_source: *stop_loss exit MSFT* (10:31 ET): -2%",
        ":information_source: *daily briefing 2025-03-10* (10:31 ET): flat",
    ]
    last = store.scalar("SELECT MAX(id) FROM notifications")
    assert cursor(store) == last
    assert forward_notifications(store, n) == 0
    assert len(rx.bodies) == 3
    add_notes(store, "quiet market: nothing actionable in 30 min (closed)")
    assert forward_notifications(store, n) == 1
    assert rx.texts[-1].startswith(":information_source: *quiet market*")


def test_forward_respects_batch(rx: Receiver, store: Store) -> None:
    add_notes(store, *(f"n{i}" for i in range(5)))
    n, _ = notifier(rx)
    assert forward_notifications(store, n, batch=2) == 2
    assert forward_notifications(store, n, batch=2) == 2
    assert forward_notifications(store, n, batch=2) == 1
    assert [t.rsplit(" ", 1)[-1] for t in rx.texts] == ["n0", "n1", "n2", "n3", "n4"]


def test_cursor_is_committed_for_other_connections(rx: Receiver, store: Store) -> None:
    add_notes(store, "a", "b")
    n, _ = notifier(rx)
    assert forward_notifications(store, n) == 2
    other = sqlite3.connect(store.path)  # what a restarted engine would read
    try:
        assert other.execute("SELECT value FROM meta WHERE key='slack_cursor'").fetchone() == ("2",)
    finally:
        other.close()


def test_failure_stops_the_call_and_the_next_call_resends_that_row_first(rx: Receiver, store: Store) -> None:
    add_notes(store, "first", "second", "third")
    rx.answer(OK, E400)
    n, _ = notifier(rx, retries=0)
    assert forward_notifications(store, n) == 1
    first_id = store.scalar("SELECT MIN(id) FROM notifications")
    assert cursor(store) == first_id
    assert store.get_meta(f"slack_failures:{first_id + 1}") == "1"
    assert forward_notifications(store, n) == 2
    assert [t.rsplit(" ", 1)[-1] for t in rx.texts] == ["first", "second", "second", "third"]
    assert store.get_meta(f"slack_failures:{first_id + 1}") is None  # cleared once delivered


def test_poison_row_is_skipped_after_max_attempts(rx: Receiver, store: Store,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    add_notes(store, "poison", "fine")
    poison_id = store.scalar("SELECT MIN(id) FROM notifications")
    rx.answer(E400, E400, E400)
    n, _ = notifier(rx, retries=0)
    with caplog.at_level(logging.WARNING, logger="core.services.slack"):
        assert forward_notifications(store, n, max_attempts=3) == 0
        assert forward_notifications(store, n, max_attempts=3) == 0
        assert cursor(store) == 0 and store.get_meta(f"slack_failures:{poison_id}") == "2"
        assert forward_notifications(store, n, max_attempts=3) == 0  # third failure: skipped
    assert cursor(store) == poison_id
    assert store.get_meta(f"slack_failures:{poison_id}") is None
    assert any(f"notification {poison_id} skipped" in r.getMessage() for r in caplog.records)
    assert forward_notifications(store, n, max_attempts=3) == 1
    assert [t.rsplit(" ", 1)[-1] for t in rx.texts] == ["poison"] * 3 + ["fine"]


def test_forward_waits_while_the_engine_has_uncommitted_writes(rx: Receiver, store: Store) -> None:
    # the engine shares the connection and may still roll its tick back: nothing it has not committed is sent
    store.notify("info", "filled: maybe", NOW)
    n, _ = notifier(rx)
    assert forward_notifications(store, n) == 0
    assert rx.bodies == []
    store.conn.rollback()
    assert forward_notifications(store, n) == 0 and rx.bodies == []
    add_notes(store, "filled: for real")
    assert forward_notifications(store, n) == 1
    assert rx.texts == [":information_source: *filled* (10:31 ET): for real"]


def test_forward_never_commits_an_engine_write_begun_during_the_http_call(rx: Receiver, store: Store) -> None:
    add_notes(store, "a")
    rx.answer(hang(10.0))
    n, _ = notifier(rx, timeout_s=5.0, retries=0)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(forward_notifications(store, n)), daemon=True)
    t.start()
    assert rx.arrived.wait(5.0)
    with store.lock:  # the engine, mid-tick, writes something it has not committed
        store.execute("INSERT INTO heartbeat(name, ts, info) VALUES ('engine', 'x', 'half a tick')")
    rx.release.set()  # the receiver hangs up; the send fails, the failure is recorded
    t.join(timeout=10.0)
    assert not t.is_alive() and done == [0]
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("SELECT COUNT(*) FROM heartbeat").fetchone() == (0,)  # still the engine's to commit
        assert other.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'slack_failures:%'").fetchone() == (0,)
        store.commit()  # the engine's commit carries the failure count along
        assert other.execute("SELECT value FROM meta WHERE key LIKE 'slack_failures:%'").fetchone() == ("1",)
    finally:
        other.close()


# ---------------------------------------------------------------- a dead webhook never blocks the engine
def test_dead_webhook_never_blocks_the_store_lock(rx: Receiver, store: Store) -> None:
    add_notes(store, "broker problem, trading skipped: timeout")
    rx.answer(hang(10.0))
    n, _ = notifier(rx, timeout_s=0.3, retries=0)
    free_in_flight: list[bool] = []

    def probe() -> None:  # runs in the receiver before it answers: the client is certainly mid-request
        got = store.lock.acquire(blocking=False)
        free_in_flight.append(got)
        if got:
            store.lock.release()

    rx.on_request = probe
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(forward_notifications(store, n)), daemon=True)
    t.start()
    assert rx.arrived.wait(5.0)  # the request reached the receiver, which now hangs
    got = store.lock.acquire(blocking=False)  # the engine, on its own thread, wants the lock
    if got:
        store.lock.release()
    assert got, "forward_notifications held store.lock during the HTTP call"
    assert free_in_flight == [True]
    # 10 s hang vs 0.3 s client timeout: a thread done within 8 s was ended by the timeout
    t.join(timeout=8.0)
    assert not t.is_alive()
    assert result == [0]
    assert cursor(store) == 0
    assert store.get_meta(f"slack_failures:{store.scalar('SELECT MIN(id) FROM notifications')}") == "1"


def test_overlapping_forwards_do_not_send_twice(rx: Receiver, store: Store) -> None:
    add_notes(store, "only once")
    rx.answer(hang(10.0))
    n, _ = notifier(rx, timeout_s=5.0, retries=0)
    t = threading.Thread(target=lambda: forward_notifications(store, n), daemon=True)
    t.start()
    assert rx.arrived.wait(5.0)
    assert forward_notifications(store, n) == 0  # the first call is mid-flight
    rx.release.set()
    t.join(timeout=10.0)
    assert not t.is_alive()
    assert rx.texts == [":information_source: (10:31 ET) only once"]


# ---------------------------------------------------------------- the URL is a secret
def test_webhook_url_never_reaches_the_logs(rx: Receiver, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    n, _ = notifier(rx, timeout_s=0.3, retries=1)
    rx.answer(OK, E500, OK, E400, e429("0"), hang(10.0))
    assert n.send("ok") is True
    assert n.send("retried") is True
    assert n.send("bad") is False
    assert n.send("slow") is False  # 429 then a timeout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}{PATH}"
    dead = SlackNotifier(dead_url, retries=1, sleep=Sleeps())
    assert dead.send("refused") is False
    add_notes(store, "poison")
    for _ in range(2):
        rx.answer(E400)
        forward_notifications(store, n, max_attempts=2)
    assert cursor(store) == 1

    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 400" in logged and "ConnectionError" in logged and "Timeout" in logged  # the failures are logged
    assert "urllib3" in {r.name.split(".")[0] for r in caplog.records}  # the library's own lines were captured
    for secret in (rx.url, dead_url, PATH, SECRET):
        assert secret not in logged
