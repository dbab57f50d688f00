"""Reshaping the code leaves every replay's database as it was (issue 23: "keep every table byte-identical").

Six replays cover every gate, the baskets, manual expiry, tight risk limits, a relaxed profile with protections and
fees (``tests/golden_replays.py`` lists them); each table's rows, sorted, must hash to what the fixture recorded.
A deliberate rule change rewrites the fixture (``python tests/golden_replays.py write``) in the commit that makes it.
"""

from __future__ import annotations

import json

import pytest

from tests.golden_replays import CASES, FIXTURE, case_digests


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_replay_database_is_unchanged(case):
    want = json.loads(FIXTURE.read_text())[case[0]]
    got = case_digests(case)
    assert {t: v["rows"] for t, v in got.items()} == {t: v["rows"] for t, v in want.items()}
    assert got == want
