"""A malformed or out-of-range ``commands`` row never stops the engine or steers it (issue 30, finding 1).

Before: a row ``{not json`` ahead of a valid pause made every tick fail with JSONDecodeError, the pause stayed
unapplied and the row stayed ``new`` until edited by hand; ``1e999`` and ``[1, 2]`` did the same; ``cooldown_s``
86,400 and ``profile_sessions_left`` −5 were applied. Now each row is checked on its own and a bad one is marked
``failed`` with its reason.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.engine.commands import MAX_PAYLOAD
from tests.helpers import DAY, at
from tests.rules_helpers import engine

T = at(DAY, 11, 0)

POISON = [
    ("set_params", "{not json", "not JSON"),
    ("set_params", '{"profile_sessions_left": 1e999}', "finite"),
    ("set_params", "[1, 2]", "JSON object"),
    ("set_params", '{"cooldown_s": 86400}', "cooldown"),
    ("set_params", '{"profile_sessions_left": -5}', "profile_sessions_left"),
    ("set_params", '{"paused": "yes"}', "boolean"),
    ("set_params", '{"paused": [1]}', "boolean"),
    ("set_params", '{"cutoff_delta": NaN}', "NaN"),
    ("set_params", '{"cutoff_delta": true}', "not a number"),
    ("set_params", '{"nope": 1}', "not a live parameter"),
    ("set_params", '{"cutoff_delta": 0.01, "_source": "protection"}', "source"),
    ("set_params", "{}", "names no parameter"),
    ("approve", '{"intent_id": 7}', "intent_id"),
    ("approve", '{"intent_id": "x", "qty": 100000}', "qty"),
    ("release_protection", '{"id": "1; DROP TABLE trades"}', "id"),
    ("close_position", '{"symbol": ["AAPL"]}', "symbol"),
    ("launch_missiles", "{}", "unknown command"),
    ("set_params", '{"cutoff_delta": ' + "9" * 5000 + "}", "characters"),
    ("set_params", "[" * 100_000 + "]" * 100_000, "characters"),
]


def insert(e, kind, payload, who="intruder"):
    cur = e.store.execute("INSERT INTO commands(created_at, kind, payload, who, status) VALUES (?,?,?,?, 'new')",
                          (T.isoformat(), kind, payload, who))
    e.store.commit()
    return int(cur.lastrowid)


def test_poison_rows_are_refused_one_by_one_and_the_valid_row_after_them_is_applied():
    e = engine({"NVDA": 0.6})
    ids = [insert(e, kind, payload) for kind, payload, _ in POISON]
    pause = insert(e, "set_params", '{"paused": true, "_source": "switch"}', who="trader")
    rep = e.tick(T)
    assert rep.broker_error is None and rep.storage_error is None and rep.commands == len(POISON) + 1
    rows = {r["id"]: r for r in e.store.query("SELECT id, status, result FROM commands")}
    for cid, (kind, payload, why) in zip(ids, POISON, strict=True):
        assert rows[cid]["status"] == "failed", (kind, payload[:40])
        assert why.lower() in rows[cid]["result"].lower(), (payload[:40], rows[cid]["result"])
    assert rows[pause]["status"] == "done" and e.params.paused
    # the engine kept deciding: the tick recorded NVDA's signal, refused by the pause just applied
    assert e.store.one("SELECT reason FROM signals WHERE symbol='NVDA' ORDER BY id DESC LIMIT 1")["reason"] == "paused"
    assert e.params.cooldown_s == 180 and e.params.profile_sessions_left is None  # nothing out of range got in
    # and the next tick has nothing left to retry
    assert e.tick(T + timedelta(seconds=30)).commands == 0


@pytest.mark.parametrize("payload, applied", [('{"cooldown_s": 1800}', True), ('{"cooldown_s": 1810}', False),
                                              ('{"profile_sessions_left": 100}', True),
                                              ('{"profile_sessions_left": 101}', False)])
def test_a_command_value_is_held_to_the_bounds_table(payload, applied):
    e = engine({})
    cid = insert(e, "set_params", payload)
    e.tick(T)
    assert e.store.one("SELECT status FROM commands WHERE id=?", (cid,))["status"] == ("done" if applied else "failed")


def test_a_payload_at_the_size_limit_is_read_and_one_past_it_is_refused():
    e = engine({})
    body = '{"cutoff_delta": 0.05}'
    ok = insert(e, "set_params", body + " " * (MAX_PAYLOAD - len(body)))
    too_long = insert(e, "set_params", body + " " * (MAX_PAYLOAD - len(body) + 1))
    e.tick(T)
    status = {r["id"]: r["status"] for r in e.store.query("SELECT id, status FROM commands")}
    assert (status[ok], status[too_long]) == ("done", "failed")


def test_a_command_that_fails_while_applied_is_refused_and_the_next_one_still_runs(monkeypatch):
    e = engine({})

    def broken(*a, **k):
        raise OverflowError("somewhere deep")

    monkeypatch.setattr(e.state.protections, "release", broken)
    bad = insert(e, "release_protection", '{"id": 1}')
    good = insert(e, "set_params", '{"cutoff_delta": 0.04}')
    e.tick(T)
    status = {r["id"]: (r["status"], r["result"]) for r in e.store.query("SELECT id, status, result FROM commands")}
    assert status[bad][0] == "failed" and "OverflowError" in status[bad][1]
    assert status[good][0] == "done" and e.params.cutoff_delta == 0.04
