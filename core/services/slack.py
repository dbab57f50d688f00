"""Slack incoming-webhook notifications: the ``notifications`` table, forwarded by cursor.

The engine writes every user-facing message into ``notifications``; ``forward_notifications``
sends the new rows, oldest first, and records how far it got in meta ``slack_cursor``, so a
restart neither loses nor repeats a message (delivery is at least once).

The webhook URL is a credential (anyone holding it can post to the channel): nothing here
logs it, and requests' own exception texts, which quote it, are never logged verbatim.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests

if TYPE_CHECKING:
    from core.config import Settings
    from core.state.store import Store

log = logging.getLogger(__name__)

NY = ZoneInfo("America/New_York")
SLACK_TEXT_LIMIT = 3000  # Slack's limit for a section block's text; longer plain messages get folded
CURSOR_KEY = "slack_cursor"
FAILURES_PREFIX = "slack_failures:"
REDACTED = "<slack-webhook>"

_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":rotating_light:"}
_UNKNOWN_EMOJI = ":grey_question:"


# ---------------------------------------------------------------- keeping the URL out of every log
class _RedactWebhook(logging.Filter):
    """Blank webhook URLs out of urllib3's records: its DEBUG line quotes the request path, the secret part."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()  # replaced whole, never mutated: logging threads iterate it unlocked

    def add(self, *secrets: str) -> None:
        with self._lock:
            merged = set(self._secrets) | {s for s in secrets if s}
            self._secrets = tuple(sorted(merged, key=len, reverse=True))  # the full URL before its path

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
            clean = self.redact(msg)
            if clean != msg:
                record.msg, record.args = clean, None
        except Exception:  # a logging filter must never break the caller's request
            pass
        return True


_REDACTOR = _RedactWebhook()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACTOR)  # addFilter ignores a second add of the same


def _webhook_secrets(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    # "/" alone is no secret, and redacting it would mangle every other log line
    return (url, tail, parts.path) if len(parts.path) > 1 else (url,)


# ---------------------------------------------------------------- the HTTP client
class SlackNotifier:
    """Posts text to one Slack incoming webhook; ``send`` never raises and never logs the URL."""

    def __init__(self, webhook_url: str, *, timeout_s: float = 3.0, retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not webhook_url or not webhook_url.startswith(("https://", "http://")):
            raise ValueError("Slack webhook URL must be an http(s) URL")  # the value itself is a secret
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("Slack notifier: timeout_s must be > 0; retries and backoffs must be >= 0")
        self._url = webhook_url
        self._secrets = _webhook_secrets(webhook_url)
        _REDACTOR.add(*self._secrets)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.session = session if session is not None else requests.Session()
        self.sleep = sleep
        # one forwarder per notifier at a time: two overlapping calls would post the same rows twice
        self.forward_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SlackNotifier(url={REDACTED}, timeout_s={self.timeout_s}, retries={self.retries})"

    def _redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, REDACTED)
        return text

    def _backoff(self, retry: int) -> float:
        return min(self.backoff_s * (2 ** retry), self.max_backoff_s)

    def _retry_after(self, resp: requests.Response, retry: int) -> float:
        raw = resp.headers.get("Retry-After", "")
        try:
            wait = float(raw)
        except (TypeError, ValueError):  # absent, or an HTTP date: fall back to our own backoff
            return self._backoff(retry)
        if wait != wait:  # NaN
            return self._backoff(retry)
        return min(max(wait, 0.0), self.max_backoff_s)

    def send(self, text: str) -> bool:
        """POST ``{"text": text}``; True once Slack answered 200. Retries transient failures only."""
        attempts = 1 + self.retries
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self.session.post(self._url, json={"text": text}, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # the exception text quotes the URL: log the class only
                log.warning("slack: %s (attempt %d/%d)", type(exc).__name__, attempt + 1, attempts)
                wait = self._backoff(attempt)
            except Exception as exc:  # a bad URL, an encoding problem: retrying cannot help
                log.error("slack: request failed, not retried: %s", type(exc).__name__)
                return False
            else:
                status = resp.status_code
                if status == 200:
                    return True
                body = self._redact(resp.text[:200].strip()) if resp.text else ""
                if status == 429 or status >= 500:
                    log.warning("slack: HTTP %d %s (attempt %d/%d)", status, body, attempt + 1, attempts)
                    wait = self._retry_after(resp, attempt) if status == 429 else self._backoff(attempt)
                else:
                    # 400 invalid_payload, 403, 404 no_service...: the same request fails the same way again
                    log.error("slack: HTTP %d %s, not retried", status, body)
                    return False
            if last:
                break
            try:
                self.sleep(wait)
            except Exception:  # an injected sleep that fails must not make send() raise
                log.exception("slack: backoff sleep failed")
                return False
        log.error("slack: giving up after %d attempts", attempts)
        return False


def notifier_from_settings(settings: Settings) -> SlackNotifier | None:
    """The notifier the settings describe, or None when SLACK_WEBHOOK_URL is unset."""
    secret = settings.slack_webhook_url
    if secret is None or not secret.get_secret_value().strip():
        return None
    return SlackNotifier(secret.get_secret_value().strip(), timeout_s=settings.slack_timeout_s,
                         retries=settings.slack_retries)


# ---------------------------------------------------------------- formatting
def _escape(text: str) -> str:
    # Slack's three control characters; everything else in mrkdwn is left as the engine wrote it
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _ny_time(ts: str) -> str | None:
    try:
        dt = datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:  # the store writes UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(NY).strftime("%H:%M ET")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:  # never leave half an &amp; behind
        cut = cut[:amp]
    return cut + "…"


def format_for_slack(level: str, text: str, ts: str) -> str:
    """``:warning: *protection signal_quality fired* (10:31 ET): why...`` — emoji, bold headline, NY time."""
    emoji = _EMOJI.get(level, _UNKNOWN_EMOJI)
    when = _ny_time(ts)
    stamp = f" ({when})" if when else ""
    head, sep, rest = (text or "").partition(": ")
    # the part before the first ": " is the headline ("filled", "protection x fired", "daily briefing <date>")
    # (a "*" inside would end the bold early; "stop_loss"'s underscore is harmless mid-word)
    if sep and 0 < len(head) <= 80 and "\n" not in head and "*" not in head:
        out = f"{emoji} *{_escape(head)}*{stamp}: {_escape(rest)}"
    else:
        out = f"{emoji}{stamp} {_escape(text or '')}"
    return _cut(out, SLACK_TEXT_LIMIT)


# ---------------------------------------------------------------- forwarding the notifications table
def forward_notifications(store: Store, notifier: SlackNotifier, *, batch: int = 20, max_attempts: int = 5) -> int:
    """Send the notification rows past meta ``slack_cursor``, oldest first; return how many were delivered.

    HTTP never runs under ``store.lock``. A failed send ends the call so the order is kept;
    after ``max_attempts`` failed calls on one row it is skipped, so one poison message cannot
    silence the channel.
    """
    if not notifier.forward_lock.acquire(blocking=False):
        return 0  # another forward is mid-flight; it would post the same rows
    try:
        return _forward(store, notifier, batch=batch, max_attempts=max_attempts)
    finally:
        notifier.forward_lock.release()


def _forward(store: Store, notifier: SlackNotifier, *, batch: int, max_attempts: int) -> int:
    with store.lock:
        # The engine shares this connection and writes under its own lock, committing at the end of a
        # tick or rolling the whole tick back: rows not yet committed may still vanish, so wait for them.
        if store.conn.in_transaction:
            return 0
        cursor = int(store.get_meta(CURSOR_KEY) or 0)
        rows = store.query("SELECT id, ts, level, text FROM notifications WHERE id > ? ORDER BY id LIMIT ?",
                           (cursor, max(1, batch)))
    delivered = 0
    for row in rows:
        ok = notifier.send(format_for_slack(row["level"], row["text"], row["ts"]))  # lock released
        with store.lock:
            key = f"{FAILURES_PREFIX}{row['id']}"
            if ok:
                _advance(store, row["id"], key)
                delivered += 1
                continue
            failures = int(store.get_meta(key) or 0) + 1
            if failures >= max_attempts:
                log.warning("slack: notification %d skipped after %d failed attempts", row["id"], failures)
                _advance(store, row["id"], key)
            else:
                _write(store, lambda k=key, n=failures: store.set_meta(k, str(n)))
        break  # a failed send ends the call: the next one starts from the same row
    return delivered


def _advance(store: Store, row_id: int, failures_key: str) -> None:
    def apply() -> None:
        cur = int(store.get_meta(CURSOR_KEY) or 0)
        store.set_meta(CURSOR_KEY, str(max(cur, row_id)))  # never backwards
        store.execute("DELETE FROM meta WHERE key=?", (failures_key,))

    _write(store, apply)


def _write(store: Store, apply: Callable[[], Any]) -> None:
    """Apply a write under ``store.lock``; commit only if the connection held no one else's pending writes.

    If the engine started writing during our HTTP call, committing here would commit half its tick;
    instead the write joins its transaction (a rollback then means the row is simply sent again).
    """
    with store.lock:
        ours = not store.conn.in_transaction
        apply()
        if ours:
            store.commit()
