"""SEC EDGAR filings: the submissions API client, its parser and the poller that fills ``events`` (rules §6).

SEC's fair-access rules: every request names a person and an email in its User-Agent, asks for
gzip/deflate, and the client makes at most 10 requests a second. A filing is one ``events`` row keyed
by its accession number, so a poll never stores or returns the same filing twice.

Filing text is untrusted input (it is later sent to an LLM): it is only ever parsed as HTML into
plain text, stripped of control/format characters and cut to a maximum length — never evaluated.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from core.clock import NY, UTC, ensure_utc
from core.state.store import Store, iso
from core.venues.limits import SlidingWindowLimit

log = logging.getLogger(__name__)

DEFAULT_CIK_MAP = Path(__file__).resolve().parents[2] / "data" / "edgar_ciks.json"
_ACCESSION = re.compile(r"^\d{10}-\d{2}-\d{6}$")
_MAX_DOC_BYTES = 5_000_000  # a 10-K with inline XBRL can be tens of MB; the text we keep is a few KB
# tags whose content is never text: code, styling, and the hidden inline-XBRL header of 10-K/10-Q documents
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "ix:header"})
# tags that separate words, so "<td>a</td><td>b</td>" reads "a b" and not "ab"
_BREAK_TAGS = frozenset({
    "p", "div", "br", "hr", "tr", "td", "th", "li", "ul", "ol", "table", "thead", "tbody", "h1", "h2", "h3",
    "h4", "h5", "h6", "section", "article", "header", "footer", "title", "body", "html", "blockquote", "pre",
    "dt", "dd", "center", "font",
})


class EdgarError(RuntimeError):
    """An EDGAR request or payload failed; the message says what (status, URL path, bad JSON)."""


@dataclass(frozen=True)
class Filing:
    accession: str  # "0001045810-25-000023"
    symbol: str
    cik: int
    form: str  # as SEC spells it: "8-K", "10-Q", "4"
    filed_at: datetime  # aware UTC
    url: str  # the primary document
    title: str  # primaryDocDescription, else the form


class RateLimiter(SlidingWindowLimit):
    """At most ``max_per_s`` acquisitions in any 1-second window (SEC's fair-access limit is 10/s)."""

    def __init__(self, max_per_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_per_s <= 0:
            raise ValueError(f"max_per_s must be > 0, got {max_per_s}")
        # below 1/s the window stretches so that one call fits in it (0.5/s -> 1 call per 2 s)
        super().__init__(max(1, int(max_per_s)), 1.0 if max_per_s >= 1 else 1.0 / max_per_s, clock=clock,
                         sleep=sleep)


def _url_path(url: str) -> str:
    # error messages carry the path only: never a query string or credentials in the netloc
    return urlsplit(url).path or "/"


class EdgarClient:
    """Blocking HTTP client for data.sec.gov and the www.sec.gov archives."""

    def __init__(self, user_agent: str, *, base_url: str, archives_url: str, max_rps: float = 10,
                 timeout_s: float = 10, session: requests.Session | None = None,
                 limiter: RateLimiter | None = None) -> None:
        if not user_agent.strip():
            raise ValueError("SEC requires a User-Agent naming you and an email address")
        self.user_agent = user_agent
        self.base_url = base_url.rstrip("/")
        self.archives_url = archives_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.limiter = limiter or RateLimiter(max_rps)
        # per request, not on the session: an injected session keeps its own defaults for other hosts
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}

    @classmethod
    def from_settings(cls, settings: Any, *, session: requests.Session | None = None) -> EdgarClient:
        """Build from ``core.config.Settings`` (duck-typed: core.services.edgar does not import the config)."""
        return cls(settings.edgar_user_agent, base_url=settings.edgar_base_url,
                   archives_url=settings.edgar_archives_url, max_rps=settings.edgar_max_rps, session=session)

    def close(self) -> None:
        self.session.close()

    def _get(self, url: str, *, stream: bool = False) -> requests.Response:
        self.limiter.acquire()
        path = _url_path(url)
        try:
            resp = self.session.get(url, headers=self.headers, timeout=self.timeout_s, stream=stream)
        except requests.RequestException as exc:
            raise EdgarError(f"EDGAR GET {path} failed: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            resp.close()
            hint = ""
            if resp.status_code in (403, 429):
                hint = " (SEC refuses requests above 10/s or without a User-Agent naming you and an email)"
            raise EdgarError(f"EDGAR GET {path} returned HTTP {resp.status_code}{hint}")
        return resp

    def submissions(self, cik: int) -> dict:
        """The submissions JSON of one company: recent filings as parallel arrays."""
        url = f"{self.base_url}/submissions/CIK{int(cik):010d}.json"
        resp = self._get(url)
        try:
            payload = resp.json()
        except ValueError as exc:  # requests' JSONDecodeError is a ValueError
            raise EdgarError(f"EDGAR GET {_url_path(url)} returned malformed JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise EdgarError(f"EDGAR GET {_url_path(url)} returned JSON {type(payload).__name__}, not an object")
        return payload

    def filing_text(self, filing: Filing, max_chars: int) -> str:
        """The primary document as plain text, at most ``max_chars`` characters."""
        if max_chars < 0:
            raise ValueError(f"max_chars must be >= 0, got {max_chars}")
        resp = self._get(filing.url, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(chunk_size=65536):
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_DOC_BYTES:
                    break
            raw = b"".join(chunks)[:_MAX_DOC_BYTES]
        except requests.RequestException as exc:
            raise EdgarError(f"EDGAR GET {_url_path(filing.url)} failed mid-body: {type(exc).__name__}") from exc
        finally:
            resp.close()
        declared = resp.encoding if "charset=" in resp.headers.get("Content-Type", "").lower() else None
        return html_to_text(_decode(raw, declared), max_chars)


def _decode(raw: bytes, declared: str | None) -> str:
    if declared:
        try:
            return raw.decode(declared, errors="replace")
        except LookupError:  # an unknown charset name from the server
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(raw) - 3:  # only the tail is cut mid-character (the byte cap)
            return raw[: exc.start].decode("utf-8")
    # EDGAR documents without a charset that are not UTF-8 are, in practice, Windows-1252
    return raw.decode("cp1252", errors="replace")


class _TextExtractor(HTMLParser):
    """Collects character data as clean text; drops script/style/hidden-XBRL content, comments and every tag.

    Cleaning happens as data arrives and stops at ``limit`` characters, so a 5 MB 10-K costs only the
    prefix that is kept.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)  # entities are unescaped once, in the data only
        self.limit = limit
        self.out: list[str] = []
        self.size = 0
        self._skip = 0
        self._gap = False  # whitespace seen since the last kept character

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BREAK_TAGS:
            self._gap = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BREAK_TAGS:
            self._gap = True

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        for ch in data:
            if self.size >= self.limit:
                return
            if ch.isspace():
                self._gap = True
            # control (Cc) and format (Cf: zero-width, bidi overrides) characters are dropped
            elif unicodedata.category(ch) not in ("Cc", "Cf"):
                if self._gap and self.size:  # one space between words; none leading
                    self.out.append(" ")
                    self.size += 1
                    if self.size >= self.limit:
                        return
                self._gap = False
                self.out.append(ch)
                self.size += 1


def html_to_text(html: str, max_chars: int) -> str:
    """Plain text of an HTML (or plain-text) document, whitespace collapsed, cut to ``max_chars``."""
    parser = _TextExtractor(max_chars)
    for start in range(0, len(html), 65536):
        if parser.full:
            break
        parser.feed(html[start:start + 65536])
    parser.close()
    return "".join(parser.out)


# ---------------------------------------------------------------- parsing


def _parse_time(accepted: Any, filing_date: Any) -> datetime:
    if isinstance(accepted, str) and accepted.strip():
        try:
            ts = datetime.fromisoformat(accepted.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise EdgarError(f"bad acceptanceDateTime {accepted!r}") from exc
        # a value without an offset is taken as UTC, as SEC marks the rest with "Z"
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(filing_date, str):
        try:
            day = date.fromisoformat(filing_date.strip())
        except ValueError as exc:
            raise EdgarError(f"bad filingDate {filing_date!r}") from exc
        return datetime.combine(day, dtime(0, 0), tzinfo=NY).astimezone(UTC)
    raise EdgarError("filing has neither acceptanceDateTime nor filingDate")


def _doc_path(doc: Any) -> str | None:
    # the payload is external: refuse a document name that could climb out of the filing's folder
    if not isinstance(doc, str) or not doc.strip():
        return None
    doc = doc.strip()
    if doc.startswith("/") or "\\" in doc or ".." in doc.split("/") or any(ord(c) < 32 for c in doc):
        return None
    return quote(doc, safe="/")


def parse_submissions(payload: dict, symbol: str, forms: Iterable[str], archives_url: str,
                      since: datetime | None = None) -> list[Filing]:
    """Watched-form filings of a submissions payload filed after ``since``, oldest first."""
    watched = {f.strip().upper() for f in forms if f.strip()}
    since_utc = ensure_utc(since) if since is not None else None
    if not isinstance(payload, dict):
        raise EdgarError(f"submissions payload is {type(payload).__name__}, not an object")
    try:
        cik = int(payload["cik"])
        recent = payload["filings"]["recent"]
        accessions = recent["accessionNumber"]
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgarError(f"malformed submissions payload for {symbol}: missing or bad {exc}") from exc
    if not isinstance(recent, dict):
        raise EdgarError(f"malformed submissions payload for {symbol}: filings.recent is not an object")
    n = len(accessions) if isinstance(accessions, list) else -1
    columns: dict[str, list[Any]] = {}
    for name in ("form", "filingDate", "acceptanceDateTime", "primaryDocument", "primaryDocDescription"):
        col = recent.get(name)
        if col is None and name in ("acceptanceDateTime", "primaryDocDescription"):
            col = [None] * max(n, 0)  # optional columns; the others are required
        if not isinstance(col, list) or len(col) != n:
            raise EdgarError(f"malformed submissions payload for {symbol}: column {name!r} missing or not "
                             f"{n} long (accessionNumber has {n})")
        columns[name] = col
    base = archives_url.rstrip("/")
    seen: set[str] = set()
    out: list[Filing] = []
    for i in range(n):
        form = columns["form"][i]
        if not isinstance(form, str) or form.strip().upper() not in watched:
            continue
        acc = accessions[i]
        if not isinstance(acc, str) or not _ACCESSION.match(acc.strip()):
            raise EdgarError(f"malformed submissions payload for {symbol}: bad accession number {acc!r}")
        acc = acc.strip()
        if acc in seen:
            continue
        filed_at = _parse_time(columns["acceptanceDateTime"][i], columns["filingDate"][i])
        if since_utc is not None and filed_at <= since_utc:
            continue
        folder = f"{base}/Archives/edgar/data/{cik}/{acc.replace('-', '')}"
        doc = _doc_path(columns["primaryDocument"][i])
        url = f"{folder}/{doc}" if doc else f"{folder}/{acc}-index.htm"  # the filing index always exists
        desc = columns["primaryDocDescription"][i]
        title = desc.strip() if isinstance(desc, str) and desc.strip() else form.strip()
        seen.add(acc)
        out.append(Filing(accession=acc, symbol=symbol, cik=cik, form=form.strip(), filed_at=filed_at,
                          url=url, title=title))
    out.sort(key=lambda f: (f.filed_at, f.accession))
    return out


def load_cik_map(path: str | Path | None = None) -> dict[str, int]:
    """Ticker -> CIK, from ``data/edgar_ciks.json`` at the repo root unless told otherwise."""
    p = Path(path) if path is not None else DEFAULT_CIK_MAP
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgarError(f"cannot read the CIK map {p}: {exc}") from exc
    if not isinstance(raw, dict):
        raise EdgarError(f"CIK map {p} must be a JSON object of ticker -> CIK")
    out: dict[str, int] = {}
    for ticker, cik in raw.items():
        # bool is an int subclass: true/false is a typo, not a CIK
        if not isinstance(ticker, str) or not ticker.strip() or isinstance(cik, bool) or not isinstance(cik, int) \
                or cik <= 0:
            raise EdgarError(f"CIK map {p}: bad entry {ticker!r}: {cik!r} (want \"TICKER\": positive int)")
        out[ticker.strip().upper()] = cik
    return out


# ---------------------------------------------------------------- polling


def poll_edgar(client: EdgarClient, store: Store, symbols: Iterable[str], forms: Iterable[str], now: datetime, *,
               cik_map: dict[str, int], since: datetime | None = None, max_chars: int = 6000) -> list[Filing]:
    """Store the watched filings not seen before as ``events`` rows and return them, oldest first.

    A filing's text is fetched before its row is inserted, so a row appears complete (text NULL only if the
    document could not be fetched). No store lock is held during HTTP; INSERT OR IGNORE on the accession
    number is what guarantees a filing is stored and returned once, even with two pollers.
    """
    watched = tuple(forms)  # an iterator would be used up by the first symbol
    created_at = iso(ensure_utc(now))
    new: list[Filing] = []
    for symbol in dict.fromkeys(s.strip().upper() for s in symbols):
        cik = cik_map.get(symbol)
        if cik is None:
            log.debug("EDGAR: no CIK for %s, skipped", symbol)
            continue
        try:
            filings = parse_submissions(client.submissions(cik), symbol, watched, client.archives_url, since)
        except EdgarError as exc:
            log.warning("EDGAR poll of %s (CIK %d) failed: %s", symbol, cik, exc)
            continue
        if not filings:
            continue
        known = _known_ids([f.accession for f in filings], store)
        for filing in filings:
            if filing.accession in known:
                continue
            text: str | None = None
            try:
                text = client.filing_text(filing, max_chars)
            except EdgarError as exc:
                log.warning("EDGAR text of %s %s (%s) not fetched: %s", symbol, filing.form, filing.accession, exc)
            row = {"id": filing.accession, "symbol": symbol, "kind": "filing", "form": filing.form,
                   "filed_at": iso(filing.filed_at), "title": filing.title, "url": filing.url, "text": text,
                   "created_at": created_at, "processed_at": None}
            with store.transaction():
                inserted = store.insert("events", row, ignore=True)
            if inserted:
                new.append(filing)
    new.sort(key=lambda f: (f.filed_at, f.accession))
    return new


def _known_ids(ids: list[str], store: Store) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" for _ in chunk)
        with store.lock:
            rows = store.query(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
        known.update(r["id"] for r in rows)
    return known
