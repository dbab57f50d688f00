"""EDGAR client, parser and poller against recorded-format fixtures served on 127.0.0.1 (never sec.gov)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from core.clock import NY, UTC
from core.services.edgar import (
    EdgarClient,
    EdgarError,
    Filing,
    RateLimiter,
    html_to_text,
    load_cik_map,
    parse_submissions,
    poll_edgar,
)
from core.state.store import Store
from tests.fakes.edgar_server import FIXTURES, FakeEdgar

UA = "TieredTrader research jane.doe@example.com"
FORMS = ("8-K", "10-Q", "10-K", "4", "S-1")
CIKS = {"NVDA": 1045810, "AMD": 2488, "TSLA": 1318605}
NOW = datetime(2025, 3, 11, 14, 0, tzinfo=UTC)
NVDA_PATH = "/submissions/CIK0001045810.json"
AMD_PATH = "/submissions/CIK0000002488.json"
TSLA_PATH = "/submissions/CIK0001318605.json"
NVDA_8K_DOC = "/Archives/edgar/data/1045810/000104581025000041/nvda-20250310.htm"
# NVDA's watched filings, oldest first (the 144 is not watched)
NVDA_WATCHED = ["0001045810-24-000290", "0001045810-24-000316", "0001209191-25-014562", "0001045810-25-000041"]
AMD_8K = "0000002488-25-000021"


# ---------------------------------------------------------------- the local EDGAR


@pytest.fixture
def edgar() -> Iterator[FakeEdgar]:
    srv = FakeEdgar()
    yield srv
    srv.stop()


class FakeTime:
    """A clock the limiter's sleep moves forward; thread-safe so several threads may share it."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, s: float) -> None:
        with self._lock:
            self.sleeps.append(s)
            self.t += s


class CountingLimiter(RateLimiter):
    def __init__(self, max_per_s: float, fake: FakeTime) -> None:
        super().__init__(max_per_s, clock=fake.clock, sleep=fake.sleep)
        self.calls = 0
        self.stamps: list[float] = []

    def _admit(self) -> float:
        # stamped at admission, under the limiter's lock: a stamp taken after ``acquire`` returns could read a
        # clock another thread's sleep already moved on (and count a call in the wrong second)
        wait = super()._admit()
        if wait == 0.0:
            self.calls += 1
            self.stamps.append(self._stamps[-1])
        return wait


def client_for(srv: FakeEdgar, *, limiter: RateLimiter | None = None, ua: str = UA,
               session: requests.Session | None = None) -> EdgarClient:
    # a generous limiter unless the test is about the limiter: no real waiting in the other tests
    return EdgarClient(ua, base_url=srv.url, archives_url=srv.url, timeout_s=5, session=session,
                       limiter=limiter or RateLimiter(10_000))


def payload(name: str) -> dict:
    return json.loads((FIXTURES / "submissions" / name).read_text())


def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    """Most stamps in any half-open window [t, t + window)."""
    s = sorted(stamps)
    return max(sum(1 for u in s if t <= u < t + window) for t in s)


# ---------------------------------------------------------------- parsing


def test_parse_fields_utc_url_forms_and_order() -> None:
    got = parse_submissions(payload("CIK0001045810.json"), "NVDA", FORMS, "https://www.sec.gov/")
    assert [f.accession for f in got] == NVDA_WATCHED  # oldest first; the 144 filtered out
    assert [f.form for f in got] == ["8-K", "10-Q", "4", "8-K"]
    eight_k = got[-1]
    assert eight_k == Filing(
        accession="0001045810-25-000041", symbol="NVDA", cik=1045810, form="8-K",
        filed_at=datetime(2025, 3, 10, 16, 5, 12, tzinfo=UTC),
        url="https://www.sec.gov/Archives/edgar/data/1045810/000104581025000041/nvda-20250310.htm",
        title="8-K")
    assert eight_k.filed_at.utcoffset() == timedelta(0)
    form4 = got[2]
    assert form4.title == "4"  # empty primaryDocDescription falls back to the form
    assert form4.url == ("https://www.sec.gov/Archives/edgar/data/1045810/000120919125014562/"
                         "xslF345X05/wf-form4_174121390123456.xml")
    # no acceptanceDateTime: filingDate at midnight New York (EDT in August) = 04:00 UTC
    assert got[0].filed_at == datetime(2024, 8, 28, 4, 0, tzinfo=UTC)


def test_parse_watched_forms_and_since_filters() -> None:
    data = payload("CIK0001045810.json")
    # forms match case-insensitively but exactly: "4" does not pull in "144"
    assert [f.accession for f in parse_submissions(data, "NVDA", ["10-q", " 4 "], "https://x")] == [
        "0001045810-24-000316", "0001209191-25-014562"]
    # since is exclusive: the Form 4 accepted exactly at `since` is not "after" it
    since = datetime(2025, 3, 5, 18, 32, 10, tzinfo=UTC)
    assert [f.accession for f in parse_submissions(data, "NVDA", FORMS, "https://x", since)] == [
        "0001045810-25-000041"]
    # an aware New York `since` is the same instant: 13:32:09 EST is one second before the Form 4
    since_ny = datetime(2025, 3, 5, 13, 32, 9, tzinfo=NY)
    assert [f.form for f in parse_submissions(data, "NVDA", FORMS, "https://x", since_ny)] == ["4", "8-K"]
    amd = parse_submissions(payload("CIK0000002488.json"), "AMD", FORMS, "https://x")
    assert [(f.accession, f.title) for f in amd] == [(AMD_8K, "FORM 8-K")]  # the SC 13G is not watched
    with pytest.raises(ValueError, match="naive"):
        parse_submissions(data, "NVDA", FORMS, "https://x", datetime(2025, 3, 5))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("filings"), "missing or bad 'filings'"),
    (lambda d: d.update(cik="not-a-number"), "missing or bad"),
    (lambda d: d["filings"]["recent"]["primaryDocument"].pop(), "column 'primaryDocument'"),
    (lambda d: d["filings"]["recent"]["acceptanceDateTime"].__setitem__(0, "yesterday"), "acceptanceDateTime"),
    (lambda d: d["filings"]["recent"]["accessionNumber"].__setitem__(0, "../../etc"), "bad accession"),
])
def test_parse_malformed_payload_raises_edgar_error(mutate: Any, match: str) -> None:
    data = payload("CIK0001045810.json")
    mutate(data)
    with pytest.raises(EdgarError, match=match):
        parse_submissions(data, "NVDA", FORMS, "https://x")


def test_parse_refuses_a_document_name_that_leaves_the_filing_folder() -> None:
    data = payload("CIK0000002488.json")
    data["filings"]["recent"]["primaryDocument"][1] = "../../../../evil.htm"
    (f,) = parse_submissions(data, "AMD", FORMS, "https://www.sec.gov")
    assert f.url == "https://www.sec.gov/Archives/edgar/data/2488/000000248825000021/0000002488-25-000021-index.htm"


def test_load_cik_map(tmp_path: Path) -> None:
    ciks = load_cik_map()
    assert ciks == {"NVDA": 1045810, "TSLA": 1318605, "AAPL": 320193, "MSFT": 789019, "AMZN": 1018724,
                    "META": 1326801, "GOOGL": 1652044, "AMD": 2488, "AVGO": 1730168}
    bad = tmp_path / "ciks.json"
    bad.write_text('{"NVDA": "1045810"}')
    with pytest.raises(EdgarError, match="bad entry 'NVDA'"):
        load_cik_map(bad)


# ---------------------------------------------------------------- polling


def test_poll_stores_new_filings_once(edgar: FakeEdgar) -> None:
    store = Store(":memory:")
    client = client_for(edgar)
    first = poll_edgar(client, store, ["NVDA", "AMD"], FORMS, NOW, cik_map=CIKS)
    # oldest first across companies: AMD's 8-K of 6 March sits between NVDA's Form 4 and 8-K
    assert [f.accession for f in first] == NVDA_WATCHED[:3] + [AMD_8K, NVDA_WATCHED[3]]
    rows = {r["id"]: r for r in store.query("SELECT * FROM events")}
    assert set(rows) == set(NVDA_WATCHED) | {AMD_8K}
    r = rows["0001045810-25-000041"]
    assert (r["symbol"], r["kind"], r["form"], r["filed_at"], r["created_at"], r["processed_at"]) == (
        "NVDA", "filing", "8-K", "2025-03-10T16:05:12+00:00", NOW.isoformat(), None)
    assert r["url"] == f"{edgar.url}{NVDA_8K_DOC}"
    assert "Item 7.01 Regulation FD Disclosure." in r["text"]
    assert rows[AMD_8K]["text"] == "AMD 8-K Item 5.02 Departure of Directors or Certain Officers."
    # the other NVDA documents are not in the fixtures (404): the event stays, text NULL
    assert rows["0001045810-24-000316"]["text"] is None

    n_before = len(edgar.requests)
    assert poll_edgar(client, store, ["NVDA", "AMD"], FORMS, NOW + timedelta(minutes=2), cik_map=CIKS) == []
    # the second poll fetched the submissions only: no document of a known filing again
    assert edgar.paths()[n_before:] == [NVDA_PATH, AMD_PATH]
    counts = store.query("SELECT id, COUNT(*) AS n FROM events GROUP BY id")
    assert len(counts) == 5 and all(c["n"] == 1 for c in counts)


def test_poll_since_and_symbols_without_cik(edgar: FakeEdgar) -> None:
    store = Store(":memory:")
    got = poll_edgar(client_for(edgar), store, ["nvda", "AAPL"], iter(FORMS), NOW, cik_map=CIKS,
                     since=datetime(2025, 3, 1, tzinfo=UTC))
    # forms given as an iterator still apply to every symbol; AAPL has no CIK here and is skipped
    assert [f.accession for f in got] == ["0001209191-25-014562", "0001045810-25-000041"]
    assert edgar.paths()[0] == NVDA_PATH and "/submissions/CIK0000320193.json" not in edgar.paths()


def test_user_agent_and_encoding_on_every_request(edgar: FakeEdgar) -> None:
    ua = "Jane Q. Doe research desk jane.q.doe+edgar@example.org"
    # an injected session's own defaults must not decide what SEC sees
    session = requests.Session()
    session.headers["User-Agent"] = "python-requests/default"
    del session.headers["Accept-Encoding"]
    client = client_for(edgar, ua=ua, session=session)
    poll_edgar(client, Store(":memory:"), ["NVDA", "AMD", "TSLA"], FORMS, NOW, cik_map=CIKS)
    paths = edgar.paths()
    assert NVDA_PATH in paths and TSLA_PATH in paths and NVDA_8K_DOC in paths  # API and archive hosts alike
    for path, headers in edgar.requests:
        assert headers.get("user-agent") == ua, path
        enc = {e.strip() for e in headers.get("accept-encoding", "").split(",")}
        assert {"gzip", "deflate"} <= enc, path


# ---------------------------------------------------------------- rate limit


def test_rate_limiter_never_exceeds_max_in_any_second() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    stamps = []
    for _ in range(25):
        limiter.acquire()
        stamps.append(fake.clock())
    assert max_in_window(stamps) <= 10
    assert all(b - a >= 1.0 for a, b in zip(stamps, stamps[10:], strict=False))
    assert fake.t >= 2.0 and fake.sleeps  # it waited, on the injected sleep


def test_rate_limiter_holds_across_threads() -> None:
    fake = FakeTime()
    limiter = CountingLimiter(10, fake)
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(8)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert limiter.calls == 32
    assert max_in_window(limiter.stamps) <= 10
    assert fake.t >= 3.0


def test_poll_goes_through_the_limiter(edgar: FakeEdgar) -> None:
    fake = FakeTime()
    limiter = CountingLimiter(2, fake)  # 2/s on a fake clock: the poll must wait, without real sleeping
    got = poll_edgar(client_for(edgar, limiter=limiter), Store(":memory:"), ["NVDA", "AMD"], FORMS, NOW,
                     cik_map=CIKS)
    assert len(got) == 5
    assert limiter.calls == len(edgar.requests) == 7  # 2 submissions + 5 documents, each acquired once
    assert max_in_window(limiter.stamps) <= 2
    assert fake.t >= 3.0


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("status", [429, 500])
def test_http_error_for_one_company_is_logged_and_others_still_stored(
        edgar: FakeEdgar, caplog: pytest.LogCaptureFixture, status: int) -> None:
    edgar.faults[NVDA_PATH] = status
    store = Store(":memory:")
    with caplog.at_level(logging.WARNING, logger="core.services.edgar"):
        got = poll_edgar(client_for(edgar), store, ["NVDA", "AMD"], FORMS, NOW, cik_map=CIKS)
    assert [f.accession for f in got] == [AMD_8K]
    assert [r["id"] for r in store.query("SELECT id FROM events")] == [AMD_8K]
    msgs = [r.getMessage() for r in caplog.records if r.name == "core.services.edgar"]
    assert any("NVDA" in m and f"HTTP {status}" in m and NVDA_PATH in m for m in msgs), msgs


def test_submissions_http_error_message(edgar: FakeEdgar) -> None:
    edgar.faults[NVDA_PATH] = 429
    with pytest.raises(EdgarError, match=r"GET /submissions/CIK0001045810\.json returned HTTP 429"):
        client_for(edgar).submissions(1045810)


def test_malformed_json_raises_clear_error_and_poll_continues(
        edgar: FakeEdgar, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(EdgarError, match=r"/submissions/CIK0001318605\.json returned malformed JSON"):
        client_for(edgar).submissions(1318605)
    store = Store(":memory:")
    with caplog.at_level(logging.WARNING, logger="core.services.edgar"):
        got = poll_edgar(client_for(edgar), store, ["TSLA", "AMD"], FORMS, NOW, cik_map=CIKS)
    assert [f.accession for f in got] == [AMD_8K]
    assert any("TSLA" in r.getMessage() and "malformed JSON" in r.getMessage() for r in caplog.records)


def test_network_error_is_an_edgar_error() -> None:
    srv = FakeEdgar()
    url = srv.url
    srv.stop()  # nothing listens on that port any more
    client = EdgarClient(UA, base_url=url, archives_url=url, timeout_s=2, limiter=RateLimiter(10_000))
    with pytest.raises(EdgarError, match=r"GET /submissions/CIK0000002488\.json failed: ConnectionError"):
        client.submissions(2488)


# ---------------------------------------------------------------- filing text


def _nvda_8k(srv: FakeEdgar) -> Filing:
    (f,) = [f for f in parse_submissions(payload("CIK0001045810.json"), "NVDA", ["8-K"], srv.url)
            if f.accession == "0001045810-25-000041"]
    return f


def test_filing_text_strips_unescapes_and_truncates(edgar: FakeEdgar) -> None:
    client = client_for(edgar)
    text = client.filing_text(_nvda_8k(edgar), 10_000)
    assert edgar.paths() == [NVDA_8K_DOC]
    for gone in ("alert", "document.cookie", "font-family", "SCRIPT-TEXT", "HIDDEN-XBRL-FACT",
                 "COMMENT-SHOULD-VANISH", "<p", "<b>", "</", "&amp;", "&nbsp;", "&#"):
        assert gone not in text, gone
    assert "NVIDIA Corporation" in text  # table cells are separate words
    assert "UNITED STATES SECURITIES AND EXCHANGE COMMISSION" in text  # <br/> separates words too
    assert "NVIDIA\u2019s partner AT&T \u2014 see <not a tag> for details." in text  # unescaped once, kept as text
    assert "Item 7.01 Regulation FD Disclosure." in text  # &nbsp; is a space; the BEL character is gone
    assert "\u202e" not in text and "instructions and buy" in text  # the bidi override is dropped
    assert "  " not in text and "\n" not in text and text == text.strip()

    short = client.filing_text(_nvda_8k(edgar), 40)
    assert len(short) == 40 and short == text[:40]
    assert client.filing_text(_nvda_8k(edgar), 0) == ""


def test_filing_text_missing_document_is_an_edgar_error(edgar: FakeEdgar) -> None:
    f = _nvda_8k(edgar)
    missing = Filing(f.accession, f.symbol, f.cik, f.form, f.filed_at, f.url.replace("nvda-", "gone-"), f.title)
    with pytest.raises(EdgarError, match="HTTP 404"):
        client_for(edgar).filing_text(missing, 100)


def test_html_to_text_unclosed_script_and_plain_text() -> None:
    assert html_to_text("<p>a</p><script>b", 100) == "a"
    assert html_to_text("plain\ttext\r\n  filing", 100) == "plain text filing"
    assert html_to_text("<style>p{}</style><p>x</p><p>y</p>", 100) == "x y"
