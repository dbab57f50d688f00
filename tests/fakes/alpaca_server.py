"""An Alpaca-shaped HTTP server for tests: the real alpaca-py clients talk to it.

``FakeAlpaca`` speaks the subset of Alpaca's trading API (``/v2/orders``, ``/v2/account``,
``/v2/positions`` (closing one or all with DELETE), ``/v2/clock``, ``/v2/calendar``) and market-data API
(``/v2/stocks/bars``) that ``TradingClient(..., url_override=fake.url)`` and ``StockHistoricalDataClient(...,
url_override=fake.url)`` use, with the wire shapes of ../shared/notes/alpaca-py.md: money and
quantities as JSON strings, strict enums, UUID ids, ``{"code", "message"}`` error bodies.

* Matching is delegated to a real ``SimBroker`` (own in-memory ``Store``, own ``MarketFeed``),
  so fills follow exactly the simulated broker's rules. The server clock is the test's:
  ``set_time`` / ``advance``; every request first runs ``feed.ensure(now)`` and
  ``sim.sync(now)`` under one lock.
* Orders the simulator would create as "rejected" (buying power, qty, not tradable) are
  answered as HTTP errors and leave no order behind, as Alpaca does. Sells are also checked
  against the quantity not already reserved by open sell orders (bracket legs), as Alpaca does.
* ``inject`` queues faults (429/5xx, slow or dropped answers, an order created whose answer
  is lost, partial fills, broker rejections) for the next matching requests. A partial fill is
  a reporting overlay: the simulator fills the whole order; for ``seconds`` of server time from
  the first answer that sees the fill, the order (and position and cash) show floor(qty/2).
* ``inject("slippage", bps=...)``: the next order created fills that many basis points worse than the simulator's
  fill model (its fill, average price, position and cash all say so), as a real market's fill may.
* ``outage(start, end)``: every request while the server's clock is in [start, end) is answered 503 (or, with
  ``kind="drop"``, the connection is closed unanswered), whatever it asks: the broker is down for that stretch of
  market time, not for a number of requests.
* ``revise_bar(symbol, ts, **values)``: the bars endpoint serves that minute with the new values from now on (a
  vendor correcting a bar after it was published); fills keep the bar as it was when it traded.
* Bars are never revealed before their minute has closed at the server's ``now``.
* ``POST /__test__/time`` ``{"at": ...}`` is test-only (no such Alpaca route): it lets an engine in
  another process move the server clock forward (never back), as ``set_time`` does in-process.

Simplifications, on purpose: market orders only (plus bracket legs on buys, and foreign
resting orders seeded with ``add_foreign_order``, which never fill); DAY orders do not expire.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from core.clock import NY, UTC, is_rth, session_bounds, sessions_between, trading_date, trading_sessions
from core.feed import MarketFeed
from core.state.store import Store
from core.strategy import load_strategy
from core.venues.broker import OrderRequest
from core.venues.marketdata import MarketData
from core.venues.sim.broker import SimBroker

_NS = uuid.UUID("0d3c6a52-7d0e-4b8e-9a57-fa4e0000a1a1")
BAR_S = 60
OPEN_STATUSES = frozenset({"new", "accepted", "pending_new", "partially_filled", "held"})
CLOSED_STATUSES = frozenset({"filled", "canceled", "rejected", "expired"})
EXCHANGES = {"SOXS": "ARCA"}  # everything else in the default universe lists on NASDAQ

ERR_UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
ERR_RATE_LIMIT = {"code": 42910000, "message": "rate limit exceeded"}
ERR_DUPLICATE = {"code": 40010001, "message": "client_order_id must be unique"}
ERR_ORDER_NOT_FOUND = {"code": 40410000, "message": "order not found"}
ERR_NO_POSITION = {"code": 40410000, "message": "position does not exist"}
ERR_NOT_CANCELABLE = {"code": 42210000, "message": "order is not cancelable"}
ERR_BUYING_POWER = {"code": 40310000, "message": "insufficient buying power"}
ERR_QTY = {"code": 40310000, "message": "insufficient qty available for order"}
ERR_WASH = {"code": 40310000, "message": "potential wash trade detected. use complex orders"}

TRANSPORT_FAULTS = ("429", "500", "502", "503", "504", "slow", "drop")
REJECT_FAULTS = ("reject_buying_power", "reject_wash_trade", "reject_halted")
FAULT_KINDS = (*TRANSPORT_FAULTS, *REJECT_FAULTS, "lost_response", "partial_fill", "slippage")
_STATUS_BODY = {
    "500": (500, {"code": 50010000, "message": "internal server error"}),
    "502": (502, {"code": 50210000, "message": "bad gateway"}),
    "503": (503, {"code": 50310000, "message": "service unavailable"}),
    "504": (504, {"code": 50410000, "message": "gateway timeout"}),
}


class _HttpError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


@dataclass
class _Fault:
    kind: str
    path: str | None
    method: str | None
    times: int
    opts: dict[str, Any] = field(default_factory=dict)
    after: int = 0  # matching requests still let through before the fault starts

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or path.startswith(self.path)


# ---------------------------------------------------------------- formatting helpers
def _num(x: float | None) -> str | None:
    """A number as Alpaca writes it: a decimal string, no exponent, no trailing zeros."""
    if x is None:
        return None
    if abs(x) < 5e-7:
        return "0"
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ny(dt: datetime) -> str:
    return dt.astimezone(NY).isoformat()


def _epoch(s: float | None) -> datetime | None:
    return None if s is None else datetime.fromtimestamp(float(s), UTC)


def _parse_time(value: str, name: str, *, data: bool = False) -> datetime:
    """RFC 3339 (``Z`` or offset), naive (taken as UTC, like alpaca-py) or a bare date (UTC midnight)."""
    try:
        value = value.strip()
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        dt = datetime.fromisoformat(value.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        raise _HttpError(400 if data else 422, _err(f"invalid {name}: {value!r}", data=data)) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _err(message: str, *, code: int = 40010001, data: bool = False) -> dict[str, Any]:
    """Trading endpoints answer {code, message}; market-data endpoints only {message}."""
    return {"message": message} if data else {"code": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def _go(self) -> None:
        self.server.fake._dispatch(self)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _go  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no request logging
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAlpaca

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: no tracebacks on stderr
        return


class FakeAlpaca:
    """Alpaca trading + market-data REST on 127.0.0.1, matching through a real ``SimBroker``."""

    def __init__(self, market: MarketData, *, universe_symbols: tuple[str, ...] | list[str],
                 start_cash: float = 100_000.0, slippage_bps: float = 2.0, fee_per_order: float = 0.0,
                 api_key: str = "test-key", secret_key: str = "test-secret", rate_limit_per_min: int = 200) -> None:
        self.market = market
        self.symbols = tuple(universe_symbols)
        self.api_key = api_key
        self.secret_key = secret_key
        self.rate_limit_per_min = rate_limit_per_min
        self.sim_store = Store(":memory:")
        self.feed = MarketFeed(market, load_strategy("core.strategy:MomentumVwapStrategy"), self.symbols)
        self.sim = SimBroker(self.sim_store, self.feed, start_cash=start_cash, slippage_bps=slippage_bps,
                             fee_per_order=fee_per_order)
        self.account_id = str(uuid.uuid5(_NS, "account"))
        self.account_number = "PA1234567"
        # knobs a test may change
        self.max_bars_page = 10_000  # server-side page cap for /v2/stocks/bars (Alpaca's maximum limit)
        self.enforce_qty_available = True  # sells may not use shares reserved by open sell orders
        self.nested_open_quirk = False  # True: status=open&nested=true filters on the parent's status only
        self.wall_time: Callable[[], float] = time.time  # the rate limiter's clock
        # observability
        self.order_posts = 0  # POST /v2/orders received (faulted, rejected and duplicate ones included)
        self.orders_created = 0  # orders that came to exist at the broker: via the API, closes, add_foreign_order
        self.posted_bodies: list[dict[str, Any]] = []  # JSON bodies of POST /v2/orders
        self.requests: list[tuple[str, str]] = []  # (method, path) — never headers
        self.errors: list[str] = []  # unexpected exceptions inside the fake (answered as 500)
        # internals
        self._lock = threading.RLock()  # all broker/market state
        self._meta = threading.Lock()  # counters, faults, rate limiter
        self._faults: list[_Fault] = []
        self._rate: dict[tuple[str, int], int] = {}
        self._now: datetime | None = self._default_now()
        self._tif: dict[str, str] = {}
        self._partial: dict[str, float] = {}  # order id -> seconds it is reported as partially filled
        self._partial_start: dict[str, datetime] = {}  # order id -> server time its fill was first seen
        self._partial_done: set[str] = set()
        self._slip: dict[str, float] = {}  # order id -> extra slippage (bps) still to apply to its fill
        self._outages: list[tuple[datetime, datetime, str]] = []  # server-time windows answered as an outage
        self._revised: dict[tuple[str, datetime], dict[str, float]] = {}  # (symbol, bar open) -> revised values
        self._seen: dict[str, str] = {}
        self._changed_at: dict[str, datetime] = {}
        self._leg_uuid: dict[str, str] = {}  # sim leg id -> public UUID
        self._leg_sim: dict[str, str] = {}  # public UUID -> sim leg id
        self._equity_day: date | None = None
        self._day_equity = start_cash
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle
    def _default_now(self) -> datetime | None:
        anchor = getattr(self.market, "anchor", None)
        if not isinstance(anchor, date):
            return None
        bounds = session_bounds(trading_sessions(anchor, 1)[0])
        return None if bounds is None else (bounds[0] + timedelta(hours=1)).astimezone(UTC)

    def start(self) -> FakeAlpaca:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-alpaca", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ clock
    @property
    def now(self) -> datetime:
        if self._now is None:
            raise RuntimeError("FakeAlpaca: call set_time() first")
        return self._now

    def set_time(self, dt: datetime) -> None:
        if dt.tzinfo is None:
            raise ValueError(f"naive datetime {dt!r}: pass a timezone-aware value")
        dt = dt.astimezone(UTC)
        with self._lock:
            if self._now is not None and dt < self._now:
                raise ValueError(f"FakeAlpaca time cannot go back: {dt} < {self._now}")
            self._now = dt

    def advance(self, seconds: float) -> datetime:
        self.set_time(self.now + timedelta(seconds=seconds))
        return self.now

    # ------------------------------------------------------------ faults and observability
    def inject(self, kind: str, *, path: str | None = None, method: str | None = None, times: int = 1,
               after: int = 0, **opts: Any) -> None:
        """Queue a fault for the next ``times`` matching requests (``path`` is a prefix of the URL path),
        starting after ``after`` matching requests have been answered normally (a fault mid-way through paging).

        Transport kinds ("429", "500", "503", "504", "slow", "drop") match any request unless
        filtered; rejections and "lost_response" default to POST /v2/orders; "partial_fill" is
        consumed by the next order actually created by a matching request.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if after < 0:
            raise ValueError("after must be >= 0")
        if kind in (*REJECT_FAULTS, "lost_response") and path is None and method is None:
            path, method = "/v2/orders", "POST"
        with self._meta:
            self._faults.append(_Fault(kind, path, method.upper() if method else None, times, dict(opts), after))

    @property
    def pending_faults(self) -> list[str]:
        with self._meta:
            return [f.kind for f in self._faults]

    def clear_faults(self) -> None:
        with self._meta:
            self._faults.clear()

    def _take_fault(self, method: str, path: str, kinds: tuple[str, ...]) -> _Fault | None:
        with self._meta:
            for f in self._faults:
                if f.kind in kinds and f.matches(method, path):
                    if f.after > 0:  # not yet: this request passes this fault by (a later one may still match)
                        f.after -= 1
                        continue
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def outage(self, start: datetime, end: datetime, *, kind: str = "503") -> None:
        """Every request while the server clock is in [start, end) fails: ``kind`` "503" (or another 5xx) is
        answered with that status, "drop" closes the connection unanswered (as a refused one fails the client)."""
        if kind not in ("500", "502", "503", "504", "drop"):
            raise ValueError(f"outage kind {kind!r}: a 5xx status or 'drop'")
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise ValueError("outage(start, end): timezone-aware, end after start")
        with self._meta:
            self._outages.append((start.astimezone(UTC), end.astimezone(UTC), kind))

    def _outage_now(self) -> str | None:
        now = self._now
        if now is None:
            return None
        with self._meta:
            return next((k for a, b, k in self._outages if a <= now < b), None)

    def revise_bar(self, symbol: str, ts: datetime, **values: float) -> None:
        """From now on the bars endpoint serves ``symbol``'s bar opening at ``ts`` with ``values`` (open, high,
        low, close, volume) in place of the original ones."""
        bad = set(values) - {"open", "high", "low", "close", "volume"}
        if bad or not values:
            raise ValueError(f"revise_bar: values among open, high, low, close, volume; got {sorted(values)}")
        with self._lock:
            self._revised.setdefault((symbol, ts.astimezone(UTC)), {}).update(
                {k: float(v) for k, v in values.items()})

    def count(self, method: str | None, path_prefix: str = "") -> int:
        with self._meta:
            return sum(1 for m, p in self.requests
                       if (method is None or m == method.upper()) and p.startswith(path_prefix))

    # ------------------------------------------------------------ seeding broker state the app did not create
    def open_position(self, symbol: str, qty: float, price: float, *, deduct_cash: bool = True) -> None:
        """Add ``qty`` shares bought at ``price`` (merged into any existing position)."""
        if symbol not in self.symbols or not float(qty) > 0 or not float(price) > 0:
            raise ValueError(f"open_position(symbol, qty, price): got {symbol!r}, {qty!r}, {price!r}")
        with self._lock, self.sim_store.transaction() as conn:
            row = conn.execute("SELECT qty, avg_price FROM sim_positions WHERE symbol=?", (symbol,)).fetchone()
            held, avg = (row["qty"], row["avg_price"]) if row else (0.0, 0.0)
            new_qty = held + qty
            new_avg = (held * avg + qty * price) / new_qty
            conn.execute("INSERT INTO sim_positions(symbol, qty, avg_price) VALUES (?,?,?) ON CONFLICT(symbol) "
                         "DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price", (symbol, new_qty, new_avg))
            if deduct_cash:
                conn.execute("UPDATE sim_account SET cash = cash - ? WHERE id=1", (qty * price,))
        with self._lock:
            self.sim.reload()  # the simulator keeps its book in memory: let it read the seeded rows

    def add_foreign_order(self, symbol: str, side: str, qty: float, *, type: str = "limit",
                          limit_price: float | None = None, client_order_id: str | None = None,
                          time_in_force: str = "gtc") -> str:
        """Seed an open order the app did not send (argument order as ``OrderRequest``); returns its id.

        A "limit" order rests forever (the simulator never fills limit parents; default price far
        from the market); a "market" order is filled by the simulator like any other.
        """
        if side not in ("buy", "sell") or isinstance(qty, str) or not float(qty) > 0:
            raise ValueError(f"add_foreign_order(symbol, side, qty): got side={side!r}, qty={qty!r}")
        if type not in ("limit", "market"):
            raise ValueError(f"type must be 'limit' or 'market', got {type!r}")
        qty = float(qty)
        with self._lock:
            now = self.now
            self.feed.ensure(now)
            oid = str(uuid.uuid4())
            cid = client_order_id or f"foreign-{oid[:8]}"
            if type == "limit" and limit_price is None:
                px = self.feed.price(symbol, now) or 100.0
                limit_price = round(px * (0.5 if side == "buy" else 1.5), 2)
            with self.sim_store.transaction() as conn:
                conn.execute(
                    "INSERT INTO sim_orders(id, client_order_id, symbol, side, qty, type, limit_price, status,"
                    " submitted_at) VALUES (?,?,?,?,?,?,?, 'new', ?)",
                    (oid, cid, symbol, side, qty, type, limit_price if type == "limit" else None, now.timestamp()))
            self.sim.reload()
            self._tif[oid] = time_in_force
            self._seen[oid] = "new"
            with self._meta:
                self.orders_created += 1
            return oid

    # ------------------------------------------------------------ HTTP plumbing
    def _rate_headers(self, path: str) -> tuple[bool, list[tuple[str, str]]]:
        bucket = "data" if path.startswith("/v2/stocks") else "trading"  # separate budgets, as at Alpaca
        t = self.wall_time()
        window = int(t // 60)
        with self._meta:
            n = self._rate.get((bucket, window), 0) + 1
            self._rate[(bucket, window)] = n
        reset = (window + 1) * 60
        headers = [("X-Ratelimit-Limit", str(self.rate_limit_per_min)),
                   ("X-Ratelimit-Remaining", str(max(0, self.rate_limit_per_min - n))),
                   ("X-Ratelimit-Reset", str(reset))]
        over = n > self.rate_limit_per_min
        if over:
            headers.append(("Retry-After", str(max(1, math.ceil(reset - t)))))
        return over, headers

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: Any, headers: list[tuple[str, str]]) -> None:
        data = b"" if body is None or status == 204 else json.dumps(body).encode()
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            if status != 204:
                h.send_header("Content-Type", "application/json; charset=utf-8")
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if data:
                h.wfile.write(data)
        except OSError:  # the client gave up (timeout) or the connection is gone
            h.close_connection = True

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        method = h.command.upper()
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self._meta:
            self.requests.append((method, path))
            if method == "POST" and path == "/v2/orders":
                self.order_posts += 1
        over, headers = self._rate_headers(path)
        if over:
            self._send(h, 429, ERR_RATE_LIMIT, headers)
            return
        down = self._outage_now() if path != "/__test__/time" else None
        if down == "drop":
            self._drop(h)
            return
        if down is not None:
            status, body = _STATUS_BODY[down] if down in _STATUS_BODY else (500, _STATUS_BODY["500"][1])
            self._send(h, status, body, headers)
            return
        if h.headers.get("APCA-API-KEY-ID") != self.api_key or h.headers.get("APCA-API-SECRET-KEY") != self.secret_key:
            self._send(h, 401, ERR_UNAUTHORIZED, headers)
            return
        fault = self._take_fault(method, path, (*TRANSPORT_FAULTS, *REJECT_FAULTS, "lost_response"))
        kind = fault.kind if fault else None
        if fault is not None:
            if kind == "drop":
                self._drop(h)
                return
            if kind == "slow":
                # outside the lock: others are served meanwhile. ``until`` (a threading.Event) holds the answer
                # until the test releases it (at most ``seconds``), so a test need not race a sleep.
                until = fault.opts.get("until")
                if until is not None:
                    until.wait(float(fault.opts.get("seconds", 30.0)))
                else:
                    time.sleep(float(fault.opts.get("seconds", 2.0)))
            elif kind in REJECT_FAULTS:
                status, body = self._reject_body(kind, raw)
                self._send(h, status, body, headers)
                return
            elif kind in ("429", "500", "503", "504") and not fault.opts.get("processed"):
                self._send_fault(h, fault, headers)
                return
        status, body = self._handle(method, path, query, raw)
        if fault is not None and kind in ("429", "500", "503", "504"):  # processed=True: done, answer lost
            self._send_fault(h, fault, headers)
        elif kind == "lost_response":
            self._drop(h)
        else:
            self._send(h, status, body, headers)

    def _send_fault(self, h: BaseHTTPRequestHandler, fault: _Fault, headers: list[tuple[str, str]]) -> None:
        if fault.kind == "429":
            retry_after = fault.opts.get("retry_after", 1)
            headers = [(k, "0" if k == "X-Ratelimit-Remaining" else v) for k, v in headers]
            self._send(h, 429, fault.opts.get("body", ERR_RATE_LIMIT), [*headers, ("Retry-After", str(retry_after))])
            return
        status, body = _STATUS_BODY[fault.kind]
        self._send(h, status, fault.opts.get("body", body), headers)

    @staticmethod
    def _reject_body(kind: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if kind == "reject_buying_power":
            return 403, ERR_BUYING_POWER
        if kind == "reject_wash_trade":
            return 403, ERR_WASH
        try:
            symbol = str(json.loads(raw or b"{}").get("symbol") or "").upper() or "XYZ"
        except (ValueError, AttributeError):
            symbol = "XYZ"
        return 422, {"code": 42210000, "message": f"asset {symbol} is not tradable"}

    def _handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            with self._lock:
                if self._now is None:
                    raise _HttpError(500, _err("FakeAlpaca: call set_time() first", code=50010000))
                self._refresh()
                result = self._route(method, path, query, raw)
                self._observe()
                return result
        except _HttpError as e:
            return e.status, e.body
        except Exception as e:  # a bug in the fake: make it visible to the test, not a hang
            self.errors.append(f"{method} {path}: {type(e).__name__}: {e}")
            return 500, {"code": 50010000, "message": f"fake error: {type(e).__name__}: {e}"}

    def _route(self, method: str, path: str, q: dict[str, str], raw: bytes) -> tuple[int, Any]:
        parts = path.rstrip("/").split("/")
        if path == "/v2/orders":
            if method == "POST":
                return 200, self._post_order(raw, method, path)
            if method == "GET":
                return 200, self._list_orders(q)
        elif path == "/v2/orders:by_client_order_id" and method == "GET":
            row = self._row_by_client_id(q.get("client_order_id", ""))
            if row is None:
                raise _HttpError(404, ERR_ORDER_NOT_FOUND)
            return 200, self._single(row, nested=True)
        elif len(parts) == 4 and parts[2] == "orders":
            if method == "GET":
                row = self._row_by_public_id(parts[3])
                return 200, self._single(row, nested=q.get("nested", "true").lower() != "false")
            if method == "DELETE":
                self._cancel(parts[3])
                return 204, None
        elif path == "/v2/account" and method == "GET":
            return 200, self._account()
        elif path == "/v2/positions" and method == "GET":
            return 200, [self._position_json(p) for p in self._positions_view()]
        elif path == "/v2/positions" and method == "DELETE":
            return 207, self._close_all_positions(q, method, path)
        elif len(parts) == 4 and parts[2] == "positions":
            symbol = parts[3].upper()
            if method == "GET":
                pos = next((p for p in self._positions_view() if p["symbol"] == symbol), None)
                if pos is None:
                    raise _HttpError(404, ERR_NO_POSITION)
                return 200, self._position_json(pos)
            if method == "DELETE":
                return 200, self._close_position(symbol, q, method, path)
        elif path == "/v2/clock" and method == "GET":
            return 200, self._clock()
        elif path == "/v2/calendar" and method == "GET":
            return 200, self._calendar(q)
        elif path == "/v2/stocks/bars" and method == "GET":
            return 200, self._bars(q)
        elif path == "/__test__/time" and method == "POST":
            return 200, self._test_time(raw)
        else:
            raise _HttpError(404, {"code": 40410000, "message": f"endpoint not found: {path}"})
        raise _HttpError(405, {"code": 40510000, "message": "method not allowed"})

    def _test_time(self, raw: bytes) -> dict[str, Any]:
        """TEST-ONLY (not an Alpaca route): a driver in another process moves the clock to max(now, at).

        The crash test's engine runs in a subprocess that is killed and restarted; a restarted engine re-runs
        its last unfinished tick, so an earlier time is ignored instead of refused.
        """
        try:
            at = _parse_time(str(json.loads(raw or b"{}")["at"]), "at")
        except (ValueError, KeyError, TypeError):
            raise _HttpError(422, _err("body must be {\"at\": <RFC 3339 time>}")) from None
        if at > self.now:
            self.set_time(at)
        self._refresh()  # match up to the new time now, as the next request would
        return {"now": _ts(self.now)}

    # ------------------------------------------------------------ state refresh
    def _refresh(self) -> None:
        now = self.now
        day = trading_date(now)
        self.feed.ensure(now)
        if day != self._equity_day:  # last_equity: equity at the start of the NY trading date
            day_start = datetime.combine(day, datetime.min.time(), tzinfo=NY).astimezone(UTC)
            self.sim.sync(day_start)
            cash = self.sim._cash()
            self._day_equity = cash + sum(r["qty"] * (self.feed.price(r["symbol"], day_start) or r["avg_price"])
                                          for r in self.sim_store.query("SELECT * FROM sim_positions"))
            self._equity_day = day
        self.sim.sync(now)
        self._apply_slippage()
        self._observe()

    def _apply_slippage(self) -> None:
        """Move the fill of each order with pending extra slippage against the trader, in every table that shows
        it (the order, its fill, the position's average price, cash), once it has filled."""
        if not self._slip:
            return
        changed = False
        for oid, bps in list(self._slip.items()):
            row = self.sim_store.one("SELECT * FROM sim_orders WHERE id=?", (oid,))
            if row is None or row["status"] != "filled":
                continue
            del self._slip[oid]
            sign = 1.0 if row["side"] == "buy" else -1.0
            old_px = float(row["filled_avg_price"])
            px = round(old_px * (1.0 + sign * bps / 10_000.0), 4)
            qty = float(row["filled_qty"])
            with self.sim_store.transaction() as conn:
                conn.execute("UPDATE sim_orders SET filled_avg_price=? WHERE id=?", (px, oid))
                conn.execute("UPDATE sim_fills SET price=? WHERE order_id=?", (px, oid))
                conn.execute("UPDATE sim_account SET cash = cash - ? WHERE id=1", (sign * qty * (px - old_px),))
                if row["side"] == "buy":
                    pos = conn.execute("SELECT qty, avg_price FROM sim_positions WHERE symbol=?",
                                       (row["symbol"],)).fetchone()
                    if pos is not None and pos["qty"] > 0:
                        avg = pos["avg_price"] + qty * (px - old_px) / pos["qty"]
                        conn.execute("UPDATE sim_positions SET avg_price=? WHERE symbol=?", (avg, row["symbol"]))
            changed = True
        if changed:
            self.sim.reload()

    def _observe(self) -> None:
        """Note when each order last changed status (updated_at / canceled_at) and name legs by UUID."""
        for r in self.sim_store.query("SELECT id, status, parent_id FROM sim_orders"):
            prev = self._seen.get(r["id"])
            if prev != r["status"]:
                if prev is not None:
                    self._changed_at[r["id"]] = self.now
                self._seen[r["id"]] = r["status"]
                if r["status"] == "filled" and r["id"] in self._partial:
                    self._partial_start.setdefault(r["id"], self.now)
            if r["parent_id"] is not None:
                self._public_leg_id(r["id"])

    def _public_leg_id(self, sim_id: str) -> str:
        """SimBroker names legs f"{parent}-{leg}"; Alpaca's ids are UUIDs: a stable uuid5, remembered both ways."""
        pub = self._leg_uuid.get(sim_id)
        if pub is None:
            pub = str(uuid.uuid5(_NS, sim_id))
            self._leg_uuid[sim_id] = pub
            self._leg_sim[pub] = sim_id
        return pub

    # ------------------------------------------------------------ orders
    def _fill_ts(self) -> dict[str, float]:
        return {r["order_id"]: r["ts"] for r in self.sim_store.query("SELECT order_id, ts FROM sim_fills")}

    def _partial_active(self, oid: str, fills: dict[str, float]) -> bool:
        """Reported partially filled for ``seconds`` of server time from the first answer that saw the fill."""
        start = self._partial_start.get(oid)
        if start is None or oid in self._partial_done or oid not in fills:
            return False
        return self.now < start + timedelta(seconds=self._partial[oid])

    def _status(self, row: dict[str, Any], fills: dict[str, float]) -> str:
        s = row["status"]
        if s == "new" and row["parent_id"] is None and row["type"] == "market" and _outside_rth(row):
            return "accepted"  # a market order sent outside the session waits for the open
        if s == "filled" and self._partial_active(row["id"], fills):
            return "partially_filled"
        return s

    def _order_json(self, row: dict[str, Any], fills: dict[str, float],
                    legs: list[dict[str, Any]] | None, nested: bool) -> dict[str, Any]:
        sim_id = row["id"]
        is_leg = row["parent_id"] is not None
        status = self._status(row, fills)
        qty = float(row["qty"])
        filled_qty = float(row["filled_qty"] or 0.0)
        fill_dt = _epoch(fills.get(sim_id))
        if status == "partially_filled":
            filled_qty = float(math.floor(qty / 2))
        submitted = _epoch(row["submitted_at"])
        assert submitted is not None
        changed = self._changed_at.get(sim_id)
        updated = max(t for t in (submitted, fill_dt, changed) if t is not None)
        tif = self._tif.get(row["parent_id"] or sim_id, "day")
        order_class = "bracket" if (is_leg or legs) else "simple"
        return {
            "id": self._public_leg_id(sim_id) if is_leg else sim_id,
            "client_order_id": row["client_order_id"],
            "created_at": _ts(submitted), "updated_at": _ts(updated), "submitted_at": _ts(submitted),
            "filled_at": _ts(fill_dt) if status == "filled" else None,
            "expired_at": None, "expires_at": None,
            "canceled_at": _ts(changed or updated) if status == "canceled" else None,
            "failed_at": _ts(changed or updated) if status == "rejected" else None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": str(uuid.uuid5(_NS, f"asset:{row['symbol']}")), "symbol": row["symbol"],
            "asset_class": "us_equity", "notional": None,
            "qty": _num(qty), "filled_qty": _num(filled_qty),
            "filled_avg_price": _num(row["filled_avg_price"]) if filled_qty > 0 else None,
            "order_class": order_class, "order_type": row["type"], "type": row["type"], "side": row["side"],
            "position_intent": "buy_to_open" if row["side"] == "buy" else "sell_to_close",
            "time_in_force": tif,
            "limit_price": _num(row["limit_price"]), "stop_price": _num(row["stop_price"]),
            "status": status, "extended_hours": False,
            "legs": [self._order_json(leg, fills, None, False) for leg in legs] if (nested and legs) else None,
            "trail_percent": None, "trail_price": None, "hwm": None,
        }

    def _legs_of(self, parent_id: str) -> list[dict[str, Any]]:
        # take-profit first, then stop-loss, as Alpaca lists them
        return self.sim_store.query("SELECT * FROM sim_orders WHERE parent_id=? ORDER BY leg DESC", (parent_id,))

    def _single(self, row: dict[str, Any], *, nested: bool) -> dict[str, Any]:
        legs = self._legs_of(row["id"]) if row["parent_id"] is None else None
        return self._order_json(row, self._fill_ts(), legs, nested)

    def _row_by_client_id(self, cid: str) -> dict[str, Any] | None:
        return self.sim_store.one("SELECT * FROM sim_orders WHERE client_order_id=?", (cid,))

    def _row_by_public_id(self, public_id: str) -> dict[str, Any]:
        try:
            uuid.UUID(public_id)
        except ValueError:
            raise _HttpError(422, _err(f"invalid order id: {public_id}")) from None
        sim_id = self._leg_sim.get(public_id, public_id)
        row = self.sim_store.one("SELECT * FROM sim_orders WHERE id=?", (sim_id,))
        if row is None:
            raise _HttpError(404, ERR_ORDER_NOT_FOUND)
        return row

    def _list_orders(self, q: dict[str, str]) -> list[dict[str, Any]]:
        status = q.get("status", "open").lower()
        if status not in ("open", "closed", "all"):
            raise _HttpError(422, _err(f"invalid status: {status}"))
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise _HttpError(422, _err("invalid limit")) from None
        if not 1 <= limit <= 500:
            raise _HttpError(422, _err("limit must be between 1 and 500"))
        nested = q.get("nested", "").lower() == "true"
        direction = q.get("direction", "desc").lower()
        symbols = {s.strip().upper() for s in q["symbols"].split(",") if s.strip()} if q.get("symbols") else None
        side = q.get("side")
        after = _parse_time(q["after"], "after") if q.get("after") else None
        until = _parse_time(q["until"], "until") if q.get("until") else None
        rows = self.sim_store.query("SELECT * FROM sim_orders")
        fills = self._fill_ts()
        legs: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: r["leg"] or "", reverse=True):
            if r["parent_id"] is not None:
                legs.setdefault(r["parent_id"], []).append(r)

        def wanted(st: str) -> bool:
            return status == "all" or (st in OPEN_STATUSES) == (status == "open")

        out: list[dict[str, Any]] = []
        for r in rows:
            if nested and r["parent_id"] is not None:
                continue  # rolled up under the parent
            st = self._status(r, fills)
            family = [st]
            if nested and not self.nested_open_quirk:
                family += [self._status(leg, fills) for leg in legs.get(r["id"], [])]
            if not any(wanted(s) for s in family):
                continue
            if symbols is not None and r["symbol"] not in symbols:
                continue
            if side and r["side"] != side:
                continue
            t = _epoch(r["submitted_at"])
            if (after is not None and t <= after) or (until is not None and t >= until):
                continue
            out.append(r)
        out.sort(key=lambda r: (r["submitted_at"], r["parent_id"] is not None, r["id"]), reverse=direction != "asc")
        return [self._order_json(r, fills, legs.get(r["id"]) if r["parent_id"] is None else None, nested)
                for r in out[:limit]]

    def _post_order(self, raw: bytes, method: str, path: str) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            raise _HttpError(400, _err("request body format is invalid", code=40010000)) from None
        with self._meta:
            self.posted_bodies.append(body)
        symbol = str(body.get("symbol") or "").upper()
        if symbol not in self.symbols:
            raise _HttpError(422, _err(f'asset "{symbol}" not found', code=42210000))
        if body.get("notional") is not None:
            raise _HttpError(422, _err("fake: notional orders are not supported", code=42210000))
        try:
            qty = float(body["qty"])
        except (KeyError, TypeError, ValueError):
            raise _HttpError(422, _err("qty is required")) from None
        side = body.get("side")
        if side not in ("buy", "sell"):
            raise _HttpError(422, _err(f"invalid side: {side}"))
        typ = body.get("type")
        if typ != "market":
            raise _HttpError(422, _err(f"fake: only market orders are supported, got type={typ}", code=42210000))
        tif = body.get("time_in_force")
        if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            raise _HttpError(422, _err(f"invalid time_in_force: {tif}"))
        if body.get("extended_hours"):
            raise _HttpError(422, _err("extended hours order must be DAY limit orders", code=42210000))
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if len(str(cid)) > 128:
            raise _HttpError(422, _err("client_order_id must be no more than 128 characters"))
        cid = str(cid)
        if self._row_by_client_id(cid) is not None:
            raise _HttpError(422, ERR_DUPLICATE)
        order_class = body.get("order_class") or "simple"
        stop = tp = None
        if order_class == "bracket":
            tp = (body.get("take_profit") or {}).get("limit_price")
            sl = body.get("stop_loss") or {}
            stop = sl.get("stop_price")
            if tp is None:
                raise _HttpError(422, _err("bracket orders require take_profit.limit_price"))
            if stop is None:
                raise _HttpError(422, _err("bracket orders require stop_loss.stop_price"))
            if sl.get("limit_price") is not None:
                raise _HttpError(422, _err("fake: stop-limit bracket legs are not supported", code=42210000))
            if side != "buy":
                raise _HttpError(422, _err("fake: bracket orders are supported on buys only", code=42210000))
            tp, stop = float(tp), float(stop)
            base = self.feed.price(symbol, self.now)
            if base is not None and tp < base + 0.01 - 1e-9:
                raise _HttpError(422, _err("take_profit.limit_price must be >= base_price + 0.01", code=42210000))
            if base is not None and stop > base - 0.01 + 1e-9:
                raise _HttpError(422, _err("stop_loss.stop_price must be <= base_price - 0.01", code=42210000))
        elif order_class != "simple":
            raise _HttpError(422, _err(f"fake: order_class {order_class} is not supported", code=42210000))
        if side == "sell" and self.enforce_qty_available and qty > self._qty_available(symbol) + 1e-9:
            raise _HttpError(403, ERR_QTY)
        row = self._create(OrderRequest(symbol, side, qty, cid, stop_price=stop, take_profit_price=tp),
                           tif, method, path)
        return self._single(row, nested=True)

    def _qty_available(self, symbol: str, *, legs: bool = True) -> float:
        """Shares held minus those reserved by open sell orders (legs of a still-open entry reserve nothing)."""
        sql = ("SELECT COALESCE(SUM(qty), 0) FROM sim_orders WHERE symbol=? AND side='sell' AND status IN"
               " ('new','held') AND NOT (parent_id IS NOT NULL AND parent_id IN (SELECT id FROM sim_orders WHERE"
               " status IN ('new','held')))")
        if not legs:
            sql += " AND parent_id IS NULL"
        reserved = self.sim_store.scalar(sql, (symbol,))
        return self.sim._held(symbol) - float(reserved or 0.0)

    def _create(self, req: OrderRequest, tif: str, method: str, path: str,
                close: bool = False) -> dict[str, Any]:
        """Create through the simulator; a simulator rejection becomes an HTTP error and no order."""
        if close:
            order = self.sim.close_position(req.symbol, req.client_order_id, self.now)
            assert order is not None
        else:
            order = self.sim.submit_order(req, self.now)
        if order.status == "rejected":
            with self.sim_store.transaction() as conn:
                conn.execute("DELETE FROM sim_orders WHERE id=? OR parent_id=?", (order.id, order.id))
            self.sim.reload()
            self.sim.submitted_count -= 1
            raise self._rejection(order.reason or "", req.symbol)
        with self._meta:
            self.orders_created += 1
        self._tif[order.id] = tif
        fault = self._take_fault(method, path, ("partial_fill",))
        if fault is not None:
            self._partial[order.id] = float(fault.opts.get("seconds", 60.0))
        fault = self._take_fault(method, path, ("slippage",))
        if fault is not None:
            self._slip[order.id] = float(fault.opts.get("bps", 20.0))
            self._apply_slippage()  # a market order may have filled at once
        row = self.sim_store.one("SELECT * FROM sim_orders WHERE id=?", (order.id,))
        assert row is not None
        return row

    @staticmethod
    def _rejection(reason: str, symbol: str) -> _HttpError:
        if reason == "insufficient buying power":
            return _HttpError(403, ERR_BUYING_POWER)
        if reason.startswith("insufficient qty"):
            return _HttpError(403, ERR_QTY)
        if "not tradable" in reason:
            return _HttpError(422, {"code": 42210000, "message": f"asset {symbol} is not tradable"})
        if reason.startswith("qty"):
            return _HttpError(422, _err("fake: qty must be a positive whole number"))
        return _HttpError(422, _err(reason, code=42210000))

    def _cancel(self, public_id: str) -> None:
        row = self._row_by_public_id(public_id)
        fills = self._fill_ts()
        if self._partial_active(row["id"], fills):
            self._partial_done.add(row["id"])  # the rest filled before the cancel arrived
            raise _HttpError(422, ERR_NOT_CANCELABLE)
        if row["status"] not in ("new", "held"):
            raise _HttpError(422, ERR_NOT_CANCELABLE)
        self.sim.cancel_order(row["id"], self.now)

    # ------------------------------------------------------------ account and positions
    def _positions_view(self) -> list[dict[str, Any]]:
        """Positions as reported: the simulator's, minus the unreported part of partially filled orders."""
        now = self.now
        fills = self._fill_ts()
        hidden: dict[str, float] = {}
        for oid in self._partial:
            row = self.sim_store.one("SELECT * FROM sim_orders WHERE id=?", (oid,))
            if row and row["status"] == "filled" and self._partial_active(oid, fills):
                h = row["qty"] - math.floor(row["qty"] / 2)
                hidden[row["symbol"]] = hidden.get(row["symbol"], 0.0) + (h if row["side"] == "buy" else -h)
        day_start = datetime.combine(trading_date(now), datetime.min.time(), tzinfo=NY).astimezone(UTC)
        out = []
        syms = {r["symbol"]: r for r in self.sim_store.query("SELECT * FROM sim_positions ORDER BY symbol")}
        for sym in sorted(set(syms) | set(hidden)):
            r = syms.get(sym)
            qty = (r["qty"] if r else 0.0) - hidden.get(sym, 0.0)
            if qty <= 1e-9:
                continue
            avg = r["avg_price"] if r else 0.0
            price = self.feed.price(sym, now) or avg
            last = self.feed.price(sym, day_start) or price
            out.append({"symbol": sym, "qty": qty, "avg": avg, "price": price, "last": last})
        return out

    def _position_json(self, p: dict[str, Any]) -> dict[str, Any]:
        qty, avg, price, last = p["qty"], p["avg"], p["price"], p["last"]
        mv, cost = qty * price, qty * avg
        reserved = self.sim._held(p["symbol"]) - self._qty_available(p["symbol"])
        return {
            "asset_id": str(uuid.uuid5(_NS, f"asset:{p['symbol']}")), "symbol": p["symbol"],
            "exchange": EXCHANGES.get(p["symbol"], "NASDAQ"), "asset_class": "us_equity",
            "asset_marginable": True, "avg_entry_price": _num(avg), "qty": _num(qty), "side": "long",
            "market_value": _num(mv), "cost_basis": _num(cost), "unrealized_pl": _num(mv - cost),
            "unrealized_plpc": _num((mv - cost) / cost if cost else 0.0),
            "unrealized_intraday_pl": _num(qty * (price - last)),
            "unrealized_intraday_plpc": _num((price - last) / last if last else 0.0),
            "current_price": _num(price), "lastday_price": _num(last),
            "change_today": _num((price - last) / last if last else 0.0),
            "qty_available": _num(max(0.0, qty - reserved)),
        }

    def _account(self) -> dict[str, Any]:
        cash = self.sim._cash()
        fills = self._fill_ts()
        for oid in self._partial:  # cash of the unreported part of a partial fill is not spent yet
            row = self.sim_store.one("SELECT * FROM sim_orders WHERE id=?", (oid,))
            if row and row["status"] == "filled" and self._partial_active(oid, fills):
                h = row["qty"] - math.floor(row["qty"] / 2)
                cash += h * row["filled_avg_price"] * (1 if row["side"] == "buy" else -1)
        long_mv = sum(p["qty"] * p["price"] for p in self._positions_view())
        equity = cash + long_mv
        return {
            "id": self.account_id, "account_number": self.account_number, "status": "ACTIVE",
            "currency": "USD", "cash": _num(cash), "buying_power": _num(cash), "regt_buying_power": _num(cash),
            "non_marginable_buying_power": _num(cash), "options_buying_power": _num(cash),
            "accrued_fees": "0", "pending_transfer_in": "0", "pending_transfer_out": "0",
            "portfolio_value": _num(equity), "equity": _num(equity), "last_equity": _num(self._day_equity),
            "long_market_value": _num(long_mv), "short_market_value": "0", "initial_margin": _num(long_mv),
            "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0", "multiplier": "1",
            "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
            "trade_suspended_by_user": False, "shorting_enabled": False,
            "created_at": "2024-01-02T14:30:00Z",
        }

    def _close_position(self, symbol: str, q: dict[str, str], method: str, path: str) -> dict[str, Any]:
        held = next((p["qty"] for p in self._positions_view() if p["symbol"] == symbol), 0.0)
        if held <= 0:
            raise _HttpError(404, ERR_NO_POSITION)
        try:
            qty = float(q["qty"]) if q.get("qty") else None
            if q.get("percentage"):
                qty = math.floor(held * float(q["percentage"]) / 100.0)
        except ValueError:
            raise _HttpError(422, _err("invalid qty or percentage")) from None
        cid = str(uuid.uuid4())
        if qty is None or abs(qty - held) < 1e-9:
            # closing cancels the bracket legs first (SimBroker.close_position), but not another pending sell
            if self.enforce_qty_available and self._qty_available(symbol, legs=False) < held - 1e-9:
                raise _HttpError(403, ERR_QTY)
            row = self._create(OrderRequest(symbol, "sell", held, cid), "day", method, path, close=True)
        else:
            if qty <= 0 or qty > held + 1e-9 or qty > self._qty_available(symbol) + 1e-9:
                raise _HttpError(403, ERR_QTY)
            row = self._create(OrderRequest(symbol, "sell", qty, cid), "day", method, path)
        return self._single(row, nested=True)

    def _close_all_positions(self, q: dict[str, str], method: str, path: str) -> list[dict[str, Any]]:
        """DELETE /v2/positions[?cancel_orders=true]: 207 Multi-Status, one ``{symbol, status, body}`` per position,
        ``body`` the closing order or, when that position could not be closed, Alpaca's failure details."""
        if q.get("cancel_orders", "").lower() == "true":  # alpaca-py sends Python's "True"
            for r in self.sim_store.query("SELECT id FROM sim_orders WHERE status IN ('new','held') ORDER BY id"):
                self.sim.cancel_order(r["id"], self.now)  # a parent takes its legs along; legs of a filled one alone
        out: list[dict[str, Any]] = []
        for p in self._positions_view():
            sym = p["symbol"]
            try:
                out.append({"symbol": sym, "status": 200, "body": self._close_position(sym, {}, method, path)})
            except _HttpError as e:
                available = self._qty_available(sym)
                out.append({"symbol": sym, "status": e.status, "body": {
                    **e.body, "symbol": sym, "existing_qty": _num(p["qty"]), "available": _num(available),
                    "held_for_orders": _num(max(0.0, p["qty"] - available))}})
        return out

    # ------------------------------------------------------------ clock and calendar
    def _clock(self) -> dict[str, Any]:
        now = self.now
        next_open = next_close = None
        for day in trading_sessions(trading_date(now), 3):
            bounds = session_bounds(day)
            assert bounds is not None
            if next_open is None and bounds[0] > now:
                next_open = bounds[0]
            if next_close is None and bounds[1] > now:
                next_close = bounds[1]
        assert next_open is not None and next_close is not None
        return {"timestamp": _ny(now), "is_open": is_rth(now), "next_open": _ny(next_open),
                "next_close": _ny(next_close)}

    def _calendar(self, q: dict[str, str]) -> list[dict[str, str]]:
        try:
            start = date.fromisoformat(q["start"][:10]) if q.get("start") else trading_date(self.now)
            end = date.fromisoformat(q["end"][:10]) if q.get("end") else start + timedelta(days=30)
            days = sessions_between(start, end)
        except ValueError as e:
            raise _HttpError(422, _err(f"invalid calendar range: {e}")) from None
        out = []
        for d in days:
            bounds = session_bounds(d)
            assert bounds is not None
            out.append({"date": d.isoformat(), "open": bounds[0].strftime("%H:%M"),
                        "close": bounds[1].strftime("%H:%M"), "settlement_date": d.isoformat()})
        return out

    # ------------------------------------------------------------ market data
    def _bars(self, q: dict[str, str]) -> dict[str, Any]:
        now = self.now
        symbols = [s.strip().upper() for s in (q.get("symbols") or "").split(",") if s.strip()]
        if not symbols:
            raise _HttpError(400, _err("missing symbols", data=True))
        if q.get("timeframe", "1Min") not in ("1Min", "1T"):
            raise _HttpError(422, _err("fake: only timeframe=1Min is served", data=True))
        if q.get("feed", "iex") not in ("iex", "sip", "delayed_sip", "otc", "boats", "overnight"):
            raise _HttpError(400, _err(f"invalid feed: {q.get('feed')}", data=True))
        if q.get("sort", "asc") != "asc":
            raise _HttpError(422, _err("fake: only sort=asc is served", data=True))
        try:
            limit = int(q.get("limit") or 1000)
        except ValueError:
            raise _HttpError(400, _err("invalid limit", data=True)) from None
        if not 1 <= limit <= 10_000:
            raise _HttpError(400, _err("invalid limit: must be between 1 and 10000", data=True))
        day_start = datetime.combine(trading_date(now), datetime.min.time(), tzinfo=NY).astimezone(UTC)
        start = _parse_time(q["start"], "start", data=True) if q.get("start") else day_start
        end = _parse_time(q["end"], "end", data=True) if q.get("end") else now
        # inclusive end, and never a bar whose minute has not closed by now
        upper = min(end, now - timedelta(seconds=BAR_S)) + timedelta(microseconds=1)
        known = [s for s in dict.fromkeys(symbols) if s in self.symbols]
        if not known or upper <= start:
            return {"bars": {}, "next_page_token": None}
        try:
            frame = self.market.bars(known, start, upper)
        except ValueError as e:
            raise _HttpError(422, _err(str(e), data=True)) from None
        frame = frame[frame["symbol"].isin(known)].sort_values(["symbol", "timestamp"], kind="stable")
        ts_ns = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        ts_ns = ts_ns.astype("int64")
        sym = frame["symbol"].to_numpy()
        if q.get("page_token"):
            last_sym, last_ts = _decode_token(q["page_token"])
            keep = (sym > last_sym) | ((sym == last_sym) & (ts_ns > last_ts))
            frame, sym, ts_ns = frame[keep], sym[keep], ts_ns[keep]
        size = min(limit, self.max_bars_page)
        page = frame.iloc[:size]
        token = _encode_token(str(sym[size - 1]), int(ts_ns[size - 1])) if len(frame) > size else None
        bars: dict[str, list[dict[str, Any]]] = {}
        times = page["timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
        cols = zip(page["symbol"].tolist(), times, page["open"].tolist(), page["high"].tolist(),
                   page["low"].tolist(), page["close"].tolist(), page["volume"].tolist(), strict=True)
        for s, t, o, hi, lo, c, v in cols:
            rev = self._revised.get((s, datetime.fromisoformat(t.replace("Z", "+00:00")))) if self._revised else None
            if rev is not None:  # a bar the vendor corrected after publishing it
                o, hi, lo = rev.get("open", o), rev.get("high", hi), rev.get("low", lo)
                c, v = rev.get("close", c), rev.get("volume", v)
            bars.setdefault(s, []).append({
                "t": t, "o": round(o, 4), "h": round(hi, 4), "l": round(lo, 4), "c": round(c, 4),
                "v": int(v), "n": max(1, int(v) // 50), "vw": round((hi + lo + c) / 3.0, 4),
            })
        return {"bars": bars, "next_page_token": token}


def _outside_rth(row: dict[str, Any]) -> bool:
    submitted = _epoch(row["submitted_at"])
    return submitted is not None and not is_rth(submitted)


def _encode_token(symbol: str, ts_ns: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([symbol, ts_ns]).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, int]:
    try:
        symbol, ts_ns = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(symbol), int(ts_ns)
    except (ValueError, TypeError, binascii.Error):
        raise _HttpError(400, _err("invalid page_token", data=True)) from None


__all__ = ["FAULT_KINDS", "FakeAlpaca"]
