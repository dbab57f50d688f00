"""Bad input, property-based (issue 9): settings, bar files, broker JSON, LLM answers, failing jobs.

Each property feeds generated input to one entry point and asserts the documented outcome: the module's own
error (``ConfigError``, ``BarDataError``, ``BrokerError``, ``ValueError``) with a message naming the problem,
or a clean value that later code can use. Never another exception, never silently wrong data.

Examples are derandomized (the same ones on every run and machine) and no example database is written.
``pytest --hypothesis-show-statistics`` prints how many examples each property tried and the ``event`` tallies
(which kinds of bad input were generated).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import string
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from pydantic import SecretStr

from core.config import ConfigError, Settings, load_settings
from core.runtime import JobStatus, Runtime
from core.services.llm import ANSWER_KEYS, Answer, parse_answer
from core.state.store import Store
from core.venues.alpaca.broker import AlpacaBroker, AlpacaCaller, RequestBudget, make_trading_client
from core.venues.broker import Account, BrokerError, BrokerFill, BrokerOrder, BrokerPosition, OrderRequest
from core.venues.marketdata import BAR_COLUMNS, PRICE_COLUMNS, BarDataError
from core.venues.sim.bar_files import MIN_PRICE, ReplayMarket, load_bars


def budget(n: int) -> settings:
    """Hypothesis settings: ``n`` examples, no deadline (CI machines are slow), fixed examples, no database."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# env values cannot hold NUL or lone surrogates (os.environ refuses them); everything else goes
ENV_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
WORDS = st.text(string.ascii_letters + " _-/", min_size=1, max_size=12).filter(lambda s: s.strip() != "")
PATHS = st.sampled_from(["override", "env"])


# ====================================================================== 1. settings
FIELDS = Settings.model_fields
NUMERIC = sorted(n for n, f in FIELDS.items() if f.annotation in (int, float))
BOOLS = sorted(n for n, f in FIELDS.items() if f.annotation is bool)
LITERALS = {n: get_args(f.annotation) for n, f in FIELDS.items() if get_origin(f.annotation) is Literal}
SECRETS = sorted(n for n, f in FIELDS.items() if SecretStr in get_args(f.annotation))
TICKER_FIELDS = ("tier_a_tickers", "tier_b_tickers", "bench_tickers")
# text settings where an empty value can only be a mistake (a path, a class, a model, a URL, a contact)
REQUIRED_TEXT = ("db_path", "strategy", "alpaca_cache_dir", "llm_model", "edgar_base_url", "edgar_archives_url",
                 "edgar_user_agent")
# values that satisfy every cross-field rule whatever single value is under test (LLM_ENABLED needs a key,
# EDGAR_ENABLED a contact, BROKER=alpaca its keys, RISK_PER_TRADE <= MAX_CONCURRENT_RISK, MARKET_DATA=replay a file)
COHERENT: dict[str, Any] = {"openai_api_key": "sk-test", "edgar_user_agent": "Jane Doe jane@example.com",
                            "alpaca_api_key": "PKTEST", "alpaca_secret_key": "SKTEST", "max_concurrent_risk": 1.0,
                            "bars_file": "data/bars.csv"}
WRONG_TYPES = [None, [], {}, [1], {"a": 1}, (1, 2), {1}, complex(1, 1), object()]
BOOL_WORDS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
              "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}
NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e400", "-1e400",
              float("nan"), float("inf"), float("-inf")]


def bounds(name: str) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is strict, high, high is strict) of a numeric setting, from its pydantic Field."""
    lo = hi = None
    lo_strict = hi_strict = False
    for m in FIELDS[name].metadata:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo, lo_strict = m.gt, True
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi, hi_strict = m.lt, True
    return lo, lo_strict, hi, hi_strict  # type: ignore[return-value]


def good_number(name: str) -> SearchStrategy[Any]:
    lo, lo_strict, hi, hi_strict = bounds(name)
    if FIELDS[name].annotation is int:
        low = None if lo is None else int(lo) + (1 if lo_strict else 0)
        high = None if hi is None else int(hi) - (1 if hi_strict else 0)
        return st.integers(min_value=low if low is not None else -(10**6),
                           max_value=high if high is not None else max(10**9, (low or 0) + 10**9))
    return st.floats(min_value=lo, max_value=hi if hi is not None else 1e12, exclude_min=lo_strict and lo is not None,
                     exclude_max=hi_strict and hi is not None, allow_nan=False, allow_infinity=False)


def bad_number(name: str, *, typed: bool = True) -> SearchStrategy[tuple[str, Any]]:
    """(kind, value) pairs that must be refused for the numeric setting ``name`` (``typed``: also non-strings)."""
    lo, lo_strict, hi, hi_strict = bounds(name)
    is_int = FIELDS[name].annotation is int
    kinds: list[SearchStrategy[tuple[str, Any]]] = [
        st.tuples(st.just("nan or inf"), st.sampled_from(NON_FINITE)),
        st.tuples(st.just("not a number"), WORDS),
        st.tuples(st.just("empty"), st.sampled_from(["", " ", "\t"])),
        st.tuples(st.just("inline comment"),
                  st.builds(lambda v, c: f"{v}  # {c}", good_number(name), st.text(ENV_TEXT, max_size=10))),
    ]
    if typed:
        kinds.append(st.tuples(st.just("wrong type"), st.sampled_from(WRONG_TYPES)))
    if is_int:
        kinds.append(st.tuples(st.just("fraction"), st.floats(-1e6, 1e6).filter(lambda x: not x.is_integer())))
    if lo is not None:
        below = (st.integers(max_value=int(lo) - (0 if lo_strict else 1)) if is_int
                 else st.floats(max_value=lo, exclude_max=not lo_strict, allow_nan=False))
        kinds.append(st.tuples(st.just("below range"), below))
    if hi is not None:
        above = (st.integers(min_value=int(hi) + (0 if hi_strict else 1)) | st.just(10**5000) if is_int
                 else st.floats(min_value=hi, exclude_min=not hi_strict, allow_nan=False))
        kinds.append(st.tuples(st.just("above range"), above))
    return st.one_of(kinds)


def env_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) > 10**4000:
        return "9" * 5000  # past Python's 4300-digit str() limit: give the env the same number of digits
    return repr(value) if isinstance(value, float) else str(value)


def load(path: str, name: str, value: Any, base: dict[str, Any] | None = None) -> Settings:
    """Settings with ``name`` set to ``value`` through keyword overrides or the environment."""
    values = {**(base or {}), name: value}
    if path == "override":
        return load_settings(**values)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k.upper(), env_text(v))
        return load_settings()


def refused(path: str, name: str, value: Any, base: dict[str, Any] | None = None, *,
            named: str | None = None) -> str:
    """Loading must raise ConfigError (nothing else) whose one-line message names the variable."""
    with pytest.raises(ConfigError) as err:
        load(path, name, value, base)
    msg = str(err.value)
    assert (named or name).upper() in msg, msg
    assert "\n" not in msg
    return msg


@budget(400)
@given(data=st.data())
def test_bad_numbers_are_refused_naming_the_variable(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NUMERIC), label="setting")
    kind, value = data.draw(bad_number(name), label="bad value")
    path = "override" if kind == "wrong type" else data.draw(PATHS, label="path")
    event(f"number: {kind} via {path}")
    refused(path, name, value)


@budget(300)
@given(data=st.data())
def test_good_numbers_are_accepted(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NUMERIC), label="setting")
    value = data.draw(good_number(name), label="value")
    path = data.draw(PATHS, label="path")
    base = dict(COHERENT)
    if name == "max_concurrent_risk":
        base["risk_per_trade"] = value  # RISK_PER_TRADE <= MAX_CONCURRENT_RISK
    s = load(path, name, value, base)
    assert getattr(s, name) == value
    if name == "seed":  # an accepted seed must also drive the synthetic market (numpy refuses some)
        from core.venues.sim.synthetic import SyntheticMarket

        assert len(SyntheticMarket(s.seed, anchor=date(2025, 3, 3)).frame_for_sessions(1)) > 0


@budget(200)
@given(data=st.data())
def test_booleans_take_the_usual_words_and_refuse_the_rest(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(BOOLS), label="setting")
    path = data.draw(PATHS, label="path")
    if data.draw(st.booleans(), label="good?"):
        word = data.draw(st.sampled_from(sorted(BOOL_WORDS)), label="word")
        shown = "".join(c.upper() if data.draw(st.booleans()) else c for c in word)
        event("bool: good word")
        assert getattr(load(path, name, shown, COHERENT), name) is BOOL_WORDS[word]
        return
    bad = st.one_of(WORDS.filter(lambda w: w.lower() not in BOOL_WORDS),
                    st.sampled_from(["", " 1", "1 ", "2", "-1", "0.0", "1.0", "1 # on", "yes please"]))
    if path == "override":
        bad |= st.sampled_from([2, -1, 0.5, None, [], {}])
    value = data.draw(bad, label="bad value")
    event("bool: bad value")
    refused(path, name, value, COHERENT)


@budget(150)
@given(data=st.data())
def test_choices_refuse_anything_not_listed(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(LITERALS)), label="setting")
    choices = LITERALS[name]
    path = data.draw(PATHS, label="path")
    if data.draw(st.booleans(), label="good?"):
        value = data.draw(st.sampled_from(choices))
        assert getattr(load(path, name, value, COHERENT), name) == value
        return
    bad = st.text(ENV_TEXT, max_size=12).filter(lambda v: v not in choices)
    if path == "override":
        bad |= st.sampled_from([1, None, [], {"a": 1}])
    refused(path, name, data.draw(bad, label="bad value"), COHERENT)


def valid_ticker(raw: str) -> bool:
    """What a ticker may be once stripped and upper-cased: a letter then up to 9 letters, digits or dots."""
    t = raw.strip().upper()
    ok = set(string.ascii_uppercase + string.digits + ".")
    return 1 <= len(t) <= 10 and t[0] in string.ascii_uppercase and set(t) <= ok


def tier_default(name: str) -> list[str]:
    return FIELDS[name].default.split(",")


@budget(250)
@given(data=st.data())
def test_bad_ticker_lists_are_refused_naming_the_variable(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(TICKER_FIELDS), label="setting")
    own = tier_default(name)
    others = [t for n in TICKER_FIELDS if n != name for t in tier_default(n)]
    kind = data.draw(st.sampled_from(["bad ticker", "duplicate", "in another tier", "inline comment",
                                      "wrong type"]), label="kind")
    path = "override" if kind == "wrong type" else data.draw(PATHS, label="path")
    if kind == "bad ticker":
        token = data.draw(st.text(ENV_TEXT, min_size=1, max_size=14).filter(
            lambda t: "," not in t and t.strip() != "" and not valid_ticker(t)), label="token")
        pos = data.draw(st.integers(0, len(own)))
        value = ",".join([*own[:pos], token, *own[pos:]])
    elif kind == "duplicate":
        value = ",".join([*own, data.draw(st.sampled_from(own)).lower()])
    elif kind == "in another tier":
        value = ",".join([*own, data.draw(st.sampled_from(others))])
    elif kind == "inline comment":
        value = ",".join(own) + "  # " + data.draw(st.text(ENV_TEXT, max_size=10))
    else:
        value = data.draw(st.sampled_from([5, own, None, {"NVDA": 1}]))
    event(f"tickers: {kind}")
    refused(path, name, value)


@budget(150)
@given(data=st.data())
def test_good_ticker_lists_are_normalised(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(TICKER_FIELDS), label="setting")
    taken = {t for n in TICKER_FIELDS if n != name for t in tier_default(n)}
    tickers = data.draw(st.lists(st.from_regex(r"[A-Z][A-Z0-9.]{0,9}", fullmatch=True).filter(
        lambda t: t not in taken), min_size=1, max_size=5, unique=True), label="tickers")
    written = ", ".join(t.lower() if data.draw(st.booleans()) else t for t in tickers)
    s = load(data.draw(PATHS), name, written)
    tier = {"tier_a_tickers": "A", "tier_b_tickers": "B", "bench_tickers": "Bench"}[name]
    assert s.universe.tiers[tier] == tuple(tickers)


DEFAULT_BASKETS: list[dict[str, Any]] = json.loads(FIELDS["baskets_json"].default)
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(10**6), 10**6)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
JSON_OBJECTS = st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)
JSON_LISTS = st.lists(JSON_VALUES, max_size=3)


@st.composite
def bad_baskets(draw: st.DrawFn) -> tuple[str, str]:
    """(kind, BASKETS_JSON text) that must be refused."""
    kind = draw(st.sampled_from(["not JSON", "not a list", "entry not an object", "missing key", "wrong type",
                                 "bad ticker", "empty ticker", "duplicate member", "inline comment"]))
    baskets = json.loads(json.dumps(DEFAULT_BASKETS))
    b = baskets[draw(st.integers(0, len(baskets) - 1))]
    if kind == "not JSON":
        text = draw(st.text(ENV_TEXT, max_size=20).filter(_not_json))
        return kind, text
    if kind == "not a list":
        return kind, json.dumps(draw(JSON_SCALARS | JSON_OBJECTS))
    if kind == "entry not an object":
        baskets.insert(draw(st.integers(0, len(baskets))), draw(JSON_SCALARS | JSON_LISTS))
    elif kind == "missing key":
        key = draw(st.sampled_from(["name", "members", "inverse_etf", "conflicts+index_etf"]))
        for k in key.split("+"):
            b.pop(k)
    elif kind == "wrong type":
        key = draw(st.sampled_from(["name", "members", "inverse_etf", "conflicts", "index_etf"]))
        if key in ("members", "conflicts"):
            wrong = JSON_VALUES.filter(lambda v: not (isinstance(v, list) and all(isinstance(x, str) for x in v)))
        else:
            wrong = JSON_VALUES.filter(lambda v: not isinstance(v, str))
        b[key] = draw(wrong)
    elif kind == "bad ticker":
        key = draw(st.sampled_from(["members", "inverse_etf", "conflicts", "index_etf"]))
        token = draw(st.text(ENV_TEXT, min_size=1, max_size=12).filter(
            lambda t: "," not in t and t.strip() != "" and not valid_ticker(t)))
        b[key] = [*b[key], token] if isinstance(b[key], list) else token
    elif kind == "empty ticker":
        b[draw(st.sampled_from(["inverse_etf", "index_etf"]))] = draw(st.sampled_from(["", " ", ","]))
    elif kind == "duplicate member":
        b["members"] = [*b["members"], b["members"][0].lower()]
    else:
        return kind, json.dumps(baskets) + "  # " + draw(st.text(ENV_TEXT, max_size=8))
    return kind, json.dumps(baskets)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return True
    return False


@budget(300)
@given(case=bad_baskets(), path=PATHS)
def test_bad_baskets_json_is_refused_naming_the_variable(case: tuple[str, str], path: str) -> None:
    kind, text = case
    event(f"baskets: {kind}")
    refused(path, "baskets_json", text)


@budget(100)
@given(value=JSON_VALUES, path=PATHS)
def test_any_json_as_baskets_is_refused_or_fully_valid(value: Any, path: str) -> None:
    try:
        s = load(path, "baskets_json", json.dumps(value))
    except ConfigError as e:
        assert "BASKETS_JSON" in str(e)
        event("any baskets json: refused")
        return
    event("any baskets json: accepted")
    for b in s.universe.baskets:
        assert b.members and all(valid_ticker(t) for t in (*b.members, *b.conflicts, b.inverse_etf, b.index_etf))


@budget(60)
@given(name=st.sampled_from(REQUIRED_TEXT), value=st.sampled_from(["", " ", "\t "]), path=PATHS)
def test_empty_text_settings_are_refused(name: str, value: str, path: str) -> None:
    refused(path, name, value)


@budget(200)
@given(data=st.data())
def test_secrets_never_appear_in_an_error(data: st.DataObject) -> None:
    canary = "CANARY" + data.draw(st.text(string.ascii_letters + string.digits, min_size=10, max_size=30))
    secret = data.draw(st.sampled_from(SECRETS), label="secret")
    how = data.draw(st.sampled_from(["the secret is malformed", "another value is bad", "its partner is missing",
                                     "the secret has the wrong type"]), label="how")
    path = "override" if how == "the secret has the wrong type" else data.draw(PATHS, label="path")
    base: dict[str, Any] = {}
    if how == "the secret is malformed":
        name, value, named = secret, f"{canary}  # {data.draw(WORDS)}", secret
    elif how == "another value is bad":
        base[secret] = canary
        name = data.draw(st.sampled_from(NUMERIC))
        _, value = data.draw(bad_number(name, typed=False))
        named = name
    elif how == "its partner is missing":
        # BROKER=alpaca needs both Alpaca keys: the canary sits in one of them (or in another secret)
        partner = "alpaca_secret_key" if secret == "alpaca_api_key" else "alpaca_api_key"
        base.update({secret: canary, "broker": "alpaca"})
        name, value, named = partner, "", partner
    else:
        name, value, named = secret, data.draw(st.sampled_from([[canary], {canary: 1}, (canary,)])), secret
    event(f"secret: {how}")
    with pytest.raises(ConfigError) as err:
        load(path, name, value, base)
    shown = "".join(traceback.format_exception(err.value))
    assert canary not in shown, shown
    assert named.upper() in str(err.value)
    if named in SECRETS:
        assert "********" in str(err.value)


@budget(150)
@given(risk=st.floats(1e-6, 1.0), cap=st.floats(1e-6, 1.0), which=st.sampled_from(["risk", "cap", "both"]),
       path=PATHS)
def test_risk_per_trade_and_the_concurrent_cap_are_judged_together(risk: float, cap: float, which: str,
                                                                    path: str) -> None:
    """Accepted when RISK_PER_TRADE <= MAX_CONCURRENT_RISK; refused otherwise with one line that names both and
    leads with the one the user set (the other keeps its default)."""
    values = {"risk": {"risk_per_trade": risk}, "cap": {"max_concurrent_risk": cap},
              "both": {"risk_per_trade": risk, "max_concurrent_risk": cap}}[which]
    name, value = next(iter(values.items()))
    base = {k: v for k, v in values.items() if k != name}
    s_risk = values.get("risk_per_trade", FIELDS["risk_per_trade"].default)
    s_cap = values.get("max_concurrent_risk", FIELDS["max_concurrent_risk"].default)
    if s_risk <= s_cap:
        event("risk pair: accepted")
        s = load(path, name, value, base)
        assert (s.risk_per_trade, s.max_concurrent_risk) == (s_risk, s_cap)
        return
    event(f"risk pair: refused, {which} set")
    msg = refused(path, name, value, base)
    lead = "MAX_CONCURRENT_RISK" if which == "cap" else "RISK_PER_TRADE"
    assert msg.startswith(f"{lead}=") and "RISK_PER_TRADE=" in msg and "MAX_CONCURRENT_RISK=" in msg, msg


# .env values: no newline, and no quote or backslash (the quoting of a .env line is the parser's business)
DOTENV_TEXT = st.text(st.characters(codec="ascii", categories=["L", "N", "P", "Zs"], exclude_characters="\"'`$\\"),
                      max_size=12)


@budget(100)
@given(data=st.data())
def test_an_inline_comment_in_dotenv_is_shown_as_written(data: st.DataObject, tmp_path_factory: Any) -> None:
    name = data.draw(st.sampled_from(NUMERIC), label="setting")
    value = f"{env_text(data.draw(good_number(name)))} # {data.draw(DOTENV_TEXT, label='comment')}"
    folder = tmp_path_factory.mktemp("dotenv")
    (folder / ".env").write_text(f'{name.upper()}="{value}"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv(name.upper(), raising=False)
        with pytest.raises(ConfigError) as err:
            load_settings()
    assert str(err.value) == f"{name.upper()}={value!r}: inline comment ('#') in the value"


# ====================================================================== 2. bar files
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}  # read_csv turns these into NaN
START = pd.Timestamp("2025-03-04T14:30:00Z")


@st.composite
def bar_frames(draw: st.DrawFn) -> pd.DataFrame:
    """Valid bars: 1-2 symbols, 2-5 minutes, rows in (timestamp, symbol) order."""
    symbols = draw(st.lists(st.sampled_from(["AAPL", "NVDA", "SQQQ"]), min_size=1, max_size=2, unique=True))
    first = START + pd.Timedelta(minutes=draw(st.integers(0, 300)))
    price = st.floats(0.01, 5000, allow_nan=False)
    rows = []
    for i in range(draw(st.integers(2, 5))):
        for sym in symbols:
            o, c = draw(price), draw(price)
            rows.append({"timestamp": first + pd.Timedelta(minutes=i), "symbol": sym, "open": o,
                         "high": max(o, c) * (1 + draw(st.floats(0, 0.05))),
                         "low": min(o, c) * (1 - draw(st.floats(0, 0.05))), "close": c,
                         "volume": float(draw(st.integers(0, 10**7)))})
    return pd.DataFrame(rows, columns=BAR_COLUMNS)


def iso(ts: pd.Timestamp, offset_h: int) -> str:
    """``ts`` written with a UTC offset of ``offset_h`` hours (Z for 0): the same instant."""
    local = ts.tz_convert(f"Etc/GMT{-offset_h:+d}" if offset_h else "UTC")
    return local.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if offset_h == 0 else f"{offset_h:+03d}:00")


def same_row(frame: pd.DataFrame, i: int) -> int | None:
    """The next row after ``i`` with the same symbol, or None."""
    later = frame.index[(frame.index > i) & (frame["symbol"] == frame.loc[i, "symbol"])]
    return int(later[0]) if len(later) else None


def objects(values: list[Any]) -> pd.Series:
    """A column of Python objects: any cell may then be replaced by anything."""
    return pd.Series(values, dtype=object)


Expect = tuple[str, ...] | None  # substrings the error must contain; None = the file must load


BAR_KINDS = [
    "clean", "missing column", "not a number", "non-positive price", "negative volume", "high below low",
    "open outside range", "NaN", "not finite", "below the smallest price", "duplicate timestamp", "out of order",
    "unparseable timestamp", "epoch out of range", "naive timestamps", "epoch seconds", "blank symbol",
    "boolean column", "huge values", "extra and reordered columns", "empty file"]


@st.composite
def bar_cases(draw: st.DrawFn, kind: str) -> tuple[pd.DataFrame | None, pd.DataFrame, Expect, int | None]:
    """(written cells, the true bars, expected error parts, bad row or None) for one kind of bad file."""
    truth = draw(bar_frames())
    n = len(truth)
    cells = truth.astype(object)
    offsets = draw(st.lists(st.sampled_from([0, 0, -5, 9]), min_size=n, max_size=n))
    cells["timestamp"] = objects([iso(t, h) for t, h in zip(truth["timestamp"], offsets, strict=True)])
    i = draw(st.integers(0, n - 1))
    j = same_row(truth, i)
    if kind in ("duplicate timestamp", "out of order") and j is None:  # needs a later row of the same symbol
        i = draw(st.sampled_from([k for k in range(n) if same_row(truth, k) is not None]))
        j = same_row(truth, i)
    col = draw(st.sampled_from(PRICE_COLUMNS + ["volume"]))
    expect: Expect = None
    row: int | None = i
    if kind == "clean":
        row = None
    elif kind == "missing column":
        gone = draw(st.lists(st.sampled_from(BAR_COLUMNS), min_size=1, max_size=3, unique=True))
        cells = cells.drop(columns=gone)
        expect, row = ("missing column", *gone), None
    elif kind == "not a number":
        cells.loc[i, col] = draw(WORDS.filter(lambda w: w.strip().lower() not in (
            "nan", "na", "n/a", "null", "none", "inf", "infinity", "-inf", "-infinity")))
        expect = (f"column {col}: ",)  # "-NaN" would read as empty: either way its column is named
    elif kind == "non-positive price":
        cells.loc[i, col if col != "volume" else "open"] = draw(st.floats(max_value=0, allow_nan=False,
                                                                          allow_infinity=False))
        expect = (f"column {col if col != 'volume' else 'open'}: non-positive",)
    elif kind == "negative volume":
        cells.loc[i, "volume"] = -draw(st.floats(min_value=1e-9, max_value=1e12))
        expect = ("column volume: negative",)
    elif kind == "high below low":
        cells.loc[i, "high"] = truth.loc[i, "low"] * draw(st.floats(0.5, 0.999))
        expect = ("column high:", "< low")
    elif kind == "open outside range":
        cells.loc[i, "open"] = truth.loc[i, "high"] * draw(st.floats(1.001, 2))
        expect = ("column open:", "outside [low, high]")
    elif kind == "NaN":
        which = draw(st.sampled_from(BAR_COLUMNS))
        cells.loc[i, which] = None
        expect = (f"column {which}: empty or NaN",)
    elif kind == "not finite":
        cells.loc[i, col] = draw(st.sampled_from(["inf", "-inf", "1e400", "Infinity", float("inf")]))
        expect = (f"column {col}: not finite",)
    elif kind == "below the smallest price":
        target = col if col != "volume" else "low"
        cells.loc[i, target] = draw(st.floats(min_value=1e-300, max_value=MIN_PRICE, exclude_max=True))
        expect = ()  # open/high/close then also leave [low, high]: the row and a price column are named below
    elif kind == "duplicate timestamp":
        cells.loc[j, "timestamp"] = cells.loc[i, "timestamp"]
        expect, row = ("column timestamp: duplicate", f"for {truth.loc[i, 'symbol']}"), j
    elif kind == "out of order":
        cells.loc[i, "timestamp"], cells.loc[j, "timestamp"] = cells.loc[j, "timestamp"], cells.loc[i, "timestamp"]
        expect, row = ("column timestamp: out-of-order", f"for {truth.loc[i, 'symbol']}"), j
    elif kind == "unparseable timestamp":
        cells.loc[i, "timestamp"] = draw(st.one_of(WORDS.filter(lambda w: w not in PANDAS_NA), st.sampled_from([
            "now", "today", "NOW", " today ", "03/04/2025 14:31", "March 4 2025 14:31", "2025-13-01T00:00:00Z",
            "2025-03-04T25:00:00Z", "2025-03-04T14:31:00+25:00", "3000-01-01T00:00:00Z", "1600-01-01T00:00:00Z"])))
        expect = ("column timestamp: unparseable",)
    elif kind == "epoch out of range":
        cells["timestamp"] = objects([int(t.timestamp()) for t in truth["timestamp"]])
        cells.loc[i, "timestamp"] = draw(st.sampled_from([1741098600000, -(10**12), 10**13, 10**18, 1e20, 1e300,
                                                          -1e300]))
        expect = ("column timestamp: unparseable",)
    elif kind == "naive timestamps":  # documented rule: a timestamp without an offset is UTC
        cells["timestamp"] = objects([t.strftime("%Y-%m-%dT%H:%M:%S") for t in truth["timestamp"]])
        row = None
    elif kind == "epoch seconds":
        cells["timestamp"] = objects([int(t.timestamp()) for t in truth["timestamp"]])
        row = None
    elif kind == "blank symbol":
        cells.loc[i, "symbol"] = draw(st.sampled_from([" ", "   ", "\t"]))
        expect = ("column symbol: blank",)
    elif kind == "boolean column":  # a spreadsheet export with TRUE/FALSE where numbers belong
        which = draw(st.sampled_from(["timestamp", *PRICE_COLUMNS, "volume"]))
        cells[which] = objects(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        expect, row = (f"column {which}:",), None
    elif kind == "huge values":
        if draw(st.booleans()):
            cells.loc[i, "volume"] = truth.loc[i, "volume"] = 1e300
        else:
            for c in PRICE_COLUMNS:
                cells.loc[i, c] = truth.loc[i, c] = 1e300
        row = None
    elif kind == "extra and reordered columns":
        cells["note"] = "x"
        cells = cells[list(reversed(cells.columns))]
        row = None
    elif draw(st.booleans()):
        cells, expect, row = None, ("cannot read",), None  # zero bytes, not even a header
    else:
        cells, expect, row = cells.iloc[0:0], ("no rows",), None
    return cells, truth, expect, row


def write_cells(cells: pd.DataFrame | None, path: Path) -> None:
    if cells is None:
        path.write_bytes(b"")
        return
    if path.suffix == ".csv":
        cells.to_csv(path, index=False)
        return
    out = cells.copy()
    for c in out.columns:  # Parquet columns have one type: mixed cells are written as their text
        values = out[c].dropna()
        if not (all(isinstance(v, bool) for v in values)
                or all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            out[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in out[c]]
    out.to_parquet(path, index=False)


def check_clean(out: pd.DataFrame, truth: pd.DataFrame) -> None:
    """What the engine may rely on in every frame ``load_bars`` returns."""
    assert list(out.columns) == BAR_COLUMNS
    assert str(out["timestamp"].dt.tz) == "UTC" and not out["timestamp"].isna().any()
    prices = out[PRICE_COLUMNS].to_numpy(dtype=float)
    assert np.isfinite(prices).all() and (prices >= MIN_PRICE).all()
    assert (out["low"] <= out[["open", "close"]].min(axis=1)).all()
    assert (out["high"] >= out[["open", "close"]].max(axis=1)).all()
    vol = out["volume"].to_numpy(dtype=float)
    assert np.isfinite(vol).all() and (vol >= 0).all()
    assert all(isinstance(s, str) and s == s.strip() and s for s in out["symbol"])
    assert not out.duplicated(["symbol", "timestamp"]).any()
    assert out.equals(out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True))
    # nothing silently changed: the values are the ones written, at the instants meant
    want = truth.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)
    assert len(out) == len(want)
    assert (out["timestamp"].to_numpy() == want["timestamp"].to_numpy()).all()
    assert (out["symbol"].to_numpy() == want["symbol"].to_numpy()).all()
    for c in PRICE_COLUMNS + ["volume"]:
        assert np.array_equal(out[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float)), c
    market = ReplayMarket(out)
    lo, hi = out["timestamp"].min().to_pydatetime(), out["timestamp"].max().to_pydatetime()
    assert len(market.bars(market.symbols, lo, hi + timedelta(minutes=1))) == len(out)
    assert market.sessions


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("kind", BAR_KINDS)
@budget(10)
@given(data=st.data())
def test_bad_bar_files_are_refused_naming_file_row_and_problem(kind: str, suffix: str, data: st.DataObject,
                                                               tmp_path_factory: Any) -> None:
    cells, truth, expect, row = data.draw(bar_cases(kind), label="case")
    path = tmp_path_factory.mktemp("bars") / f"bars{suffix}"
    write_cells(cells, path)
    if expect is None:
        check_clean(load_bars(path), truth)
        return
    with pytest.raises(BarDataError) as err:
        load_bars(path)
    msg = str(err.value)
    note(msg)
    assert msg.startswith(path.name), msg
    assert all(part in msg for part in expect), (expect, msg)
    if row is not None:
        where = f"line {row + 2}" if suffix == ".csv" else f"row {row + 1}"
        assert msg.startswith(f"{path.name} {where}, column "), (where, msg)
    if kind in ("not a number", "not finite", "below the smallest price", "NaN"):
        assert any(f"column {c}: " in msg for c in BAR_COLUMNS), msg


TOKENS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0", "1e400", "AAPL", " NVDA ", "now", "2025-03-04T14:30:00Z",
                     "2025-03-04 09:31:00-05:00", "2025-03-04T14:32:00", "1741098600", "1741098600000",
                     "99999999999999999999999", "0x10", "True"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-(10**12), 10**12).map(str),
    st.text(string.ascii_letters + string.digits + " .:+-_", max_size=12))


@budget(200)
@given(columns=st.permutations(BAR_COLUMNS + ["x"]).map(lambda c: c[: len(c) - 1]),
       rows=st.lists(st.lists(TOKENS, min_size=7, max_size=7), max_size=5))
def test_any_csv_is_refused_or_clean(columns: list[str], rows: list[list[str]], tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.csv"
    path.write_text(",".join(columns) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        out = load_bars(path)
    except BarDataError as e:
        assert str(e).startswith("fuzz.csv")
        event("fuzz csv: refused")
        return
    event("fuzz csv: loaded")
    check_clean(out, out)


@budget(100)
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".parquet", ".txt"]))
def test_random_bytes_are_refused(content: bytes, suffix: str, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("bytes") / f"junk{suffix}"
    path.write_bytes(content)
    try:
        out = load_bars(path)
    except BarDataError as e:
        assert str(e).startswith("junk")
        return
    check_clean(out, out)


def test_prices_at_the_floor_replay_without_crashing(tmp_path: Path) -> None:
    """The smallest accepted price (and a huge one) go through a whole engine session."""
    from core.research.replay import run_replay
    from core.venues.sim.synthetic import SyntheticMarket

    day = date(2025, 3, 3)
    frame = SyntheticMarket(9, anchor=day).frame_for_sessions(1)
    for c in PRICE_COLUMNS:
        frame[c] = np.where(frame["symbol"] == "NVDA", MIN_PRICE, frame[c])
        frame[c] = np.where(frame["symbol"] == "TSLA", frame[c] * 1e12, frame[c])
    path = tmp_path / "floor.csv"
    frame.to_csv(path, index=False)
    result = run_replay(load_settings(auto_mode=True), days=1, seed=9, start=day, bars_file=path)
    assert result.stats["bars"] == len(frame)


# ====================================================================== 3. broker JSON
class CannedSession:
    """Stands in for requests.Session.request: answers by (method, path) from ``routes``, else ``default``."""

    def __init__(self) -> None:
        self.default: tuple[int, bytes] = (200, b"{}")
        self.routes: dict[tuple[str, str], tuple[int, bytes]] = {}

    def __call__(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        path = url.split("/v2", 1)[1].split("?", 1)[0]
        key = (method.upper(), "/orders/ID" if path.startswith("/orders/") else path)
        status, body = self.routes.get(key, self.default)
        r = requests.Response()
        r.status_code, r._content, r.encoding, r.url = status, body, "utf-8", url
        return r


def canned_broker() -> tuple[AlpacaBroker, CannedSession]:
    client = make_trading_client("PKTEST", "SKTEST", paper=True, url_override="http://127.0.0.1:9", timeout_s=0.5)
    session = CannedSession()
    client._session.request = session  # type: ignore[method-assign]  # no socket is ever opened
    caller = AlpacaCaller(RequestBudget(10**9), max_retries=0, sleep=lambda s: None)
    return AlpacaBroker(Store(":memory:"), client, caller=caller), session


NOW = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)
ACCOUNT = {"id": "3f1b7c9e-0000-4000-8000-000000000001", "account_number": "PA1234567", "status": "ACTIVE",
           "currency": "USD", "cash": "100000", "equity": "100000", "buying_power": "100000",
           "last_equity": "99000", "portfolio_value": "100000"}
POSITION = {"asset_id": "3f1b7c9e-0000-4000-8000-000000000002", "symbol": "AAPL", "exchange": "NASDAQ",
            "asset_class": "us_equity", "avg_entry_price": "180.5", "qty": "10", "side": "long",
            "cost_basis": "1805", "current_price": "181", "market_value": "1810"}
ORDER = {"id": "3f1b7c9e-0000-4000-8000-000000000003", "client_order_id": "cid-1",
         "created_at": "2025-03-04T14:30:00Z", "updated_at": "2025-03-04T14:31:00Z",
         "submitted_at": "2025-03-04T14:30:00Z", "filled_at": "2025-03-04T14:31:00Z", "symbol": "AAPL",
         "asset_class": "us_equity", "qty": "10", "filled_qty": "10", "filled_avg_price": "180.5",
         "order_class": "simple", "order_type": "market", "type": "market", "side": "buy", "time_in_force": "day",
         "status": "filled", "extended_hours": False, "legs": None}
OPEN_ORDER = {**ORDER, "id": "3f1b7c9e-0000-4000-8000-000000000004", "client_order_id": "cid-open",
              "filled_at": None, "filled_qty": "0", "filled_avg_price": None, "status": "new"}
SELL_ORDER = {**OPEN_ORDER, "id": "3f1b7c9e-0000-4000-8000-000000000005", "client_order_id": "cid-close",
              "side": "sell", "status": "accepted"}
CLOCK = {"timestamp": "2025-03-04T10:00:00-05:00", "is_open": True, "next_open": "2025-03-05T09:30:00-05:00",
         "next_close": "2025-03-04T16:00:00-05:00"}
NUMBER_JUNK = st.sampled_from(["abc", "", " ", "NaN", "nan", "inf", "-Infinity", "1e400", "1,000", "0x10",
                               "12abc", "-5", "0", "0.5", "50", "1e-9"])  # the last: numbers, but surprising
ENUM_KEYS = ("status", "side", "type", "order_type", "order_class", "time_in_force", "asset_class", "exchange")


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with 0-3 fields dropped, nulled, made junk numbers or any JSON value, or an enum field given an
    unknown value."""
    obj = dict(base)
    for _ in range(draw(st.integers(0, 3))):  # 0: the clean answer, so the accepted path is checked too
        key = draw(st.sampled_from(sorted(base)))
        how = draw(st.sampled_from(["drop", "null", "junk number", "unknown enum", "any JSON"]))
        event(f"broker field: {how}")
        if how == "drop":
            obj.pop(key, None)
        elif how == "null":
            obj[key] = None
        elif how == "junk number":
            obj[key] = draw(NUMBER_JUNK | st.floats().map(repr))
        elif how == "unknown enum":
            obj[draw(st.sampled_from(ENUM_KEYS))] = draw(st.text(max_size=10))
        else:
            obj[key] = draw(JSON_VALUES)
    return obj


def body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def answers(template: dict[str, Any], *, many: bool) -> SearchStrategy[tuple[int, bytes]]:
    """HTTP answers built around ``template``: mostly a mutated object (a list of them if ``many``)."""
    one = mutated(template)
    shaped = st.lists(one, min_size=1, max_size=3) if many else one
    clean = [template] if many else template
    return st.one_of(
        st.tuples(st.just(200), st.just(body(clean))),  # the clean answer: the accepted path is checked too
        st.tuples(st.just(200), shaped.map(body)),
        st.tuples(st.just(200), st.one_of(JSON_VALUES.map(body), st.binary(max_size=40), st.just(b""),
                                          st.just(body([template] if not many else template)))),
        st.tuples(st.sampled_from([400, 403, 404, 422, 429, 500, 503]),
                  st.one_of(st.binary(max_size=40), JSON_VALUES.map(body),
                            st.just(b'{"code": 40010000, "message": "bad request"}'))),
    )


def finite(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def check_order(o: BrokerOrder) -> None:
    assert isinstance(o, BrokerOrder)
    assert all(isinstance(v, str) for v in (o.id, o.client_order_id, o.symbol, o.status, o.type))
    assert o.side in ("buy", "sell") and finite(o.qty) and finite(o.filled_qty)
    assert o.filled_avg_price is None or finite(o.filled_avg_price)
    assert isinstance(o.submitted_at, datetime) and o.submitted_at.tzinfo is not None


def check_fill(f: BrokerFill) -> None:
    assert isinstance(f, BrokerFill) and f.side in ("buy", "sell") and isinstance(f.symbol, str) and f.symbol
    assert finite(f.qty) and f.qty > 0 and finite(f.price) and f.price > 0, f
    assert f.ts.tzinfo is not None


def broker_call(kind: str, broker: AlpacaBroker, session: CannedSession, data: st.DataObject) -> Any:
    """Arrange the canned answers for ``kind`` and make the call; returns what the adapter returned."""
    if kind == "account":
        session.default = data.draw(answers(ACCOUNT, many=False))
        return broker.get_account(NOW)
    if kind == "positions":
        session.default = data.draw(answers(POSITION, many=True))
        return broker.get_positions(NOW)
    if kind == "open orders":
        session.default = data.draw(answers(ORDER, many=True))
        return broker.list_orders(open_only=data.draw(st.booleans()))
    if kind == "order by client id":
        session.default = data.draw(answers(ORDER, many=False))
        return broker.get_order_by_client_id("cid-1")
    if kind == "clock":
        session.default = data.draw(answers(CLOCK, many=False))
        return broker.get_clock()
    if kind == "submit":
        session.default = data.draw(answers(ORDER, many=False))
        return broker.submit_order(OrderRequest("AAPL", "buy", 10.0, "cid-1", stop_price=178.0,
                                                take_profit_price=186.0), NOW)
    if kind == "close position":  # no order yet, a position, then the open orders or the sell answer is bad
        session.routes = {("GET", "/orders:by_client_order_id"): (404, b'{"code": 40410000, "message": "nf"}'),
                          ("GET", "/positions"): (200, body([POSITION])), ("DELETE", "/orders/ID"): (204, b""),
                          ("GET", "/orders"): (200, body([OPEN_ORDER])), ("POST", "/orders"): (200, body(SELL_ORDER))}
        if data.draw(st.booleans(), label="bad listing?"):
            session.routes[("GET", "/orders")] = data.draw(answers(OPEN_ORDER, many=True))
        else:
            session.routes[("POST", "/orders")] = data.draw(answers(SELL_ORDER, many=False))
        return broker.close_position("AAPL", "cid-close", NOW)
    # sync: first a clean partial fill of a fresh order, then a bad answer about the same order
    oid = str(data.draw(st.uuids(), label="order id"))
    partial = {**ORDER, "id": oid, "client_order_id": f"cid-{oid[:8]}", "filled_qty": "4",
               "filled_avg_price": "180", "status": "partially_filled"}
    session.default = (200, body([partial]))
    try:
        broker.sync(NOW)
    except BrokerError as e:  # the clean first answer must always go through
        raise AssertionError(f"a clean order answer was refused: {e}") from None
    if kind == "fills":  # the fields a fill is made of, each clean, odd or junk
        number = st.one_of(st.sampled_from(["10", "4", "3", "50", "181", "0.5", "1e6"]), st.floats(-1e4, 1e4).map(repr),
                           st.integers(-100, 100).map(str), NUMBER_JUNK, st.none())
        later = {**partial, "filled_qty": data.draw(number, label="filled_qty"),
                 "filled_avg_price": data.draw(number, label="filled_avg_price"),
                 "side": data.draw(st.sampled_from(["buy", "sell", None, "short"]), label="side"),
                 "symbol": data.draw(st.sampled_from(["AAPL", None, ""]), label="symbol"),
                 "filled_at": data.draw(st.sampled_from([ORDER["filled_at"], None, "2025-03-04T14:31:00"]))}
        session.default = (200, body([later]))
    else:
        session.default = data.draw(answers({**partial, "filled_qty": "10", "filled_avg_price": "181"}, many=True))
    broker.sync(NOW)
    return None


BROKER_CALLS = ["account", "positions", "open orders", "order by client id", "clock", "submit", "close position",
                "sync"]


@pytest.fixture(scope="module")
def canned() -> tuple[AlpacaBroker, CannedSession, list[int]]:
    """One adapter for every example (module scope: hypothesis runs them all in one test call)."""
    broker, session = canned_broker()
    return broker, session, [0]  # [0]: the fills cursor


@budget(400)
@given(data=st.data())
def test_malformed_broker_answers_become_broker_errors(data: st.DataObject,
                                                       canned: tuple[AlpacaBroker, CannedSession, list[int]]) -> None:
    check_broker_answer(data.draw(st.sampled_from(BROKER_CALLS), label="call"), data, canned)


@budget(150)
@given(data=st.data())
def test_malformed_fill_fields_give_sane_fills_or_broker_errors(
        data: st.DataObject, canned: tuple[AlpacaBroker, CannedSession, list[int]]) -> None:
    check_broker_answer("fills", data, canned)  # the fields a fill is made of, after a clean partial fill


def check_broker_answer(kind: str, data: st.DataObject, canned: tuple[AlpacaBroker, CannedSession, list[int]]) -> None:
    """The adapter's answer to ``kind`` is sane, or a BrokerError with a message: nothing else."""
    broker, session, cursor = canned
    session.routes, session.default = {}, (200, b"{}")
    broker._invalidate()
    try:
        got = broker_call(kind, broker, session, data)
    except BrokerError as e:
        assert str(e).strip(), "a BrokerError must say what went wrong"
        event(f"broker {kind}: BrokerError")
        return
    event(f"broker {kind}: accepted")
    if kind == "account":
        assert isinstance(got, Account) and isinstance(got.account_number, str)
        assert all(finite(v) for v in (got.equity, got.cash, got.buying_power))
        assert got.last_equity is None or finite(got.last_equity)
    elif kind == "positions":
        for p in got:
            assert isinstance(p, BrokerPosition) and isinstance(p.symbol, str)
            assert finite(p.qty) and finite(p.avg_entry_price) and finite(p.market_price)
    elif kind == "open orders":
        for o in got:
            check_order(o)
    elif kind in ("order by client id", "submit", "close position"):
        assert got is None or check_order(got) is None
    elif kind == "clock":
        assert isinstance(got["is_open"], bool) and got["next_open"].tzinfo is not None
    fills, cursor[0] = broker.fills_since(cursor[0])
    for f in fills:
        check_fill(f)


def without_side(order: dict[str, Any], side: str | None) -> dict[str, Any]:
    """``order`` with its side ``side``, or with no side field at all for "missing"."""
    out = {k: v for k, v in order.items() if k != "side"}
    if side != "missing":
        out["side"] = side
    return out


SIDE_CALLS = {
    "order by client id": lambda b: b.get_order_by_client_id("cid-1"),
    "open orders": lambda b: b.list_orders(open_only=True),
    "submit": lambda b: b.submit_order(OrderRequest("AAPL", "buy", 10.0, "cid-1"), NOW),
}


@pytest.mark.parametrize("call", sorted(SIDE_CALLS))
@pytest.mark.parametrize("side", ["missing", None, ""])
def test_an_order_without_a_side_is_a_broker_error_not_a_buy(call: str, side: str | None) -> None:
    broker, session = canned_broker()
    order = without_side(SELL_ORDER, side)
    session.default = (200, body([order] if call == "open orders" else order))
    with pytest.raises(BrokerError, match=r"has no side"):
        SIDE_CALLS[call](broker)


@pytest.mark.parametrize("call", sorted(SIDE_CALLS))
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_an_order_with_its_side_keeps_it(call: str, side: str) -> None:
    broker, session = canned_broker()
    order = without_side(SELL_ORDER, side)
    session.default = (200, body([order] if call == "open orders" else order))
    got = SIDE_CALLS[call](broker)
    assert (got[0] if call == "open orders" else got).side == side


# ====================================================================== 4. LLM answers
def check_answer(content: str) -> Answer | None:
    """parse_answer returns a valid Answer or raises ValueError: anything else fails the test."""
    try:
        a = parse_answer(content)
    except ValueError as e:
        assert str(e), repr(e)
        return None
    assert isinstance(a, Answer) and type(a.sentiment) is float and type(a.confidence) is float
    assert math.isfinite(a.sentiment) and -1 <= a.sentiment <= 1
    assert math.isfinite(a.confidence) and 0 <= a.confidence <= 1
    assert isinstance(a.rationale, str) and len(a.rationale) <= 400
    return a


@budget(500)
@given(content=st.text())
def test_any_text_is_an_answer_or_a_value_error(content: str) -> None:
    event("llm text: " + ("answer" if check_answer(content) else "ValueError"))


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELD_VALUES = st.one_of(st.floats(), st.integers(), st.just(10**400), st.booleans(), st.none(),
                         st.text(max_size=500), NUMBER_JUNK, st.lists(st.integers(), max_size=2))


@budget(400)
@given(data=st.data())
def test_any_json_is_an_answer_or_a_value_error(data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="answer-shaped?"):
        keys = data.draw(st.lists(st.sampled_from([*ANSWER_KEYS, "risk", "action"]), unique=True, max_size=5))
        value: Any = {k: data.draw(FIELD_VALUES, label=k) for k in keys}
    else:
        value = data.draw(ANY_JSON, label="json")
    text = json.dumps(value)
    if data.draw(st.booleans(), label="fenced?"):
        text = f"```json\n{text}\n```"
    answer = check_answer(text)
    event("llm json: " + ("answer" if answer else "ValueError"))
    # the oracle: exactly the three keys, finite in-range numbers (not booleans), a short string -> accepted
    if isinstance(value, dict) and set(value) == set(ANSWER_KEYS):
        s, c, r = value["sentiment"], value["confidence"], value["rationale"]
        if (all(type(x) in (int, float) for x in (s, c)) and -1 <= s <= 1 and 0 <= c <= 1  # NaN, inf fail here
                and isinstance(r, str) and len(r) <= 400):
            assert answer is not None and (answer.sentiment, answer.confidence, answer.rationale) == (s, c, r)


@budget(40)
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":', '{"sentiment":']))
def test_deeply_nested_json_is_a_value_error(depth: int, opener: str) -> None:
    check_answer(opener * depth)


# ====================================================================== 5. jobs that fail
class Unprintable(Exception):
    """An exception whose str() itself fails (seen in the wild: a __str__ reading an attribute never set)."""

    def __str__(self) -> str:
        raise AttributeError("no message attribute")


EXCEPTION_TYPES: list[Callable[[str], BaseException]] = [
    ValueError, KeyError, TypeError, RuntimeError, ZeroDivisionError, AssertionError, NotImplementedError,
    TimeoutError, RecursionError, MemoryError, sqlite3.OperationalError, sqlite3.IntegrityError, BrokerError,
    ConfigError, BarDataError, requests.ConnectionError, Unprintable, StopIteration,
    lambda m: OSError(5, m), lambda m: FileNotFoundError(2, m, "/data/\udcff.db"),
    lambda m: UnicodeDecodeError("utf-8", b"\xff", 0, 1, m), lambda m: ExceptionGroup(m, [ValueError(m)]),
    # not Exception subclasses, but a job can raise them too (asyncio code, a library calling sys.exit)
    asyncio.CancelledError, SystemExit, GeneratorExit,
]
MESSAGES = st.one_of(st.text(max_size=40), st.sampled_from(["lone surrogate \udcff", "nul \x00 byte", "x" * 20_000]))
OUTCOMES = st.one_of(st.none(), st.builds(lambda make, msg: make(msg), st.sampled_from(EXCEPTION_TYPES), MESSAGES))


@pytest.fixture(scope="module")
def quiet_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A runtime without its scheduler (module scope: hypothesis runs every example in one test call).

    Its log is off: the failure lines carry lone surrogates, which pytest-xdist cannot send back from a worker
    (the worker dies); the messages are checked through JobStatus and the notifications instead."""
    logger = logging.getLogger("core.runtime")
    rt = Runtime(load_settings(db_path=str(tmp_path_factory.mktemp("rt") / "guarded.db"), engine_jobs=False,
                               sim_start="2025-03-10"))
    logger.disabled = True
    try:
        yield rt
    finally:
        logger.disabled = False
        rt.stop()


def raiser(outcome: BaseException | None, calls: list[int]) -> Callable[[], None]:
    def job() -> None:
        calls.append(1)
        if outcome is not None:
            raise outcome
    return job


def job_notes(rt: Runtime, name: str) -> int:
    return int(rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE ?", (f"job {name}: %",)))


@budget(150)
@given(outcomes=st.lists(OUTCOMES, min_size=1, max_size=6))
def test_guarded_records_backs_off_and_a_healthy_run_resets(outcomes: list[BaseException | None],
                                                             quiet_runtime: Runtime) -> None:
    rt = quiet_runtime
    status = rt.jobs["flaky"] = JobStatus("flaky", 1.0)
    notes_before = job_notes(rt, "flaky")
    calls: list[int] = []
    errors = streak = 0
    for outcome in outcomes:
        status.skip_until = 0.0  # the back-off was checked in the previous step: run now
        job = raiser(outcome, calls)
        before = time.monotonic()
        rt._guarded("flaky", job)  # never raises
        if outcome is None:
            streak = 0
            event("job: healthy run")
        else:
            errors += 1
            streak += 1
            event(f"job: {type(outcome).__name__}")
            assert status.last_error is not None and status.last_error.startswith(type(outcome).__name__)
            wait = status.skip_until - before
            assert min(60.0, 2.0**streak) - 1 < wait <= min(60.0, 2.0**streak) + 1, wait
            ran = len(calls)
            rt._guarded("flaky", job)  # inside the back-off: not run, not counted
            assert len(calls) == ran
        assert (status.errors, status.consecutive_errors, status.running) == (errors, streak, False)
    assert status.runs == len(outcomes) == len(calls)
    assert job_notes(rt, "flaky") - notes_before == errors  # every failure reached the notifications


def test_ctrl_c_inside_a_job_is_recorded_and_still_stops_the_caller(quiet_runtime: Runtime) -> None:
    rt = quiet_runtime
    rt.jobs["flaky"] = JobStatus("flaky", 1.0)
    with pytest.raises(KeyboardInterrupt):
        rt._guarded("flaky", raiser(KeyboardInterrupt(), []))
    st_ = rt.jobs["flaky"]
    assert st_.errors == 1 and st_.last_error == "KeyboardInterrupt: " and not st_.running


def test_a_failing_job_never_stops_the_scheduler(tmp_path: Path) -> None:
    rt = Runtime(load_settings(db_path=str(tmp_path / "sched.db"), sim_speed=600, engine_jobs=False,
                               sim_start="2025-03-10"))
    kinds: list[Callable[[str], BaseException]] = [asyncio.CancelledError, Unprintable, sqlite3.OperationalError,
                                                   SystemExit, BrokerError, ValueError]
    raised: list[str] = []

    def failing_stop_checks() -> None:
        exc = kinds[len(raised) % len(kinds)]("stop checks exploded")
        raised.append(type(exc).__name__)
        raise exc

    rt.run_stop_checks = failing_stop_checks  # type: ignore[method-assign]  # start() reads the jobs from here
    rt.start()
    try:
        failing = rt.jobs["stop_checks"]

        def settled(n: int) -> bool:
            return len(raised) >= n and not failing.running and failing.errors == len(raised)

        wait_until(lambda: settled(2), 30)
        runs = {name: job.runs for name, job in rt.jobs.items()}
        wait_until(lambda: all(rt.jobs[n].runs >= runs[n] + 3 for n in ("tick", "session_events")), 30)
        assert rt.running and rt.scheduler is not None and rt.scheduler.running
        rt.scheduler.pause()  # no new runs: the counters below cannot move while they are read
        time.sleep(0.3)
        wait_until(lambda: not any(j.running for j in rt.jobs.values()), 10)
        assert failing.errors == failing.consecutive_errors == len(raised) >= 2
        assert failing.last_error is not None and failing.last_error.startswith(raised[-1])
        assert {n: j.errors for n, j in rt.jobs.items() if n != "stop_checks"} == {
            "tick": 0, "kpi_snapshot": 0, "session_events": 0}
        assert job_notes(rt, "stop_checks") == len(raised)
    finally:
        rt.stop()
    assert not rt.running


def wait_until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
