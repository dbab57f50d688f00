"""A search on a real Dask cluster (scheduler and two workers on 127.0.0.1, as tests/test_dask_sweep.py starts
them) asks, runs and tells the very trials the same search runs in local processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from core.clock import trading_sessions
from core.research import search
from tests.fakes.one_cutoff import EQUAL_CUTOFFS
from tests.fakes.pool_jobs import record_pools
from tests.test_dask_sweep import LocalDask

DAY = date(2025, 3, 3)
BASE = {"strategy": "tests.fakes.one_cutoff:OneGoodCutoff", "auto_mode": True, **EQUAL_CUTOFFS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalDask]:
    c = LocalDask(tmp_path_factory.mktemp("dask"))
    try:
        c.start()
        c.ensure_workers(2)
        yield c
    finally:
        c.stop()


def trials(out: dict) -> list[tuple]:
    return [(t["number"], t["state"], t["params"], t["value"]) for t in out["trials"]]


def test_the_same_search_on_the_cluster_gives_the_same_trials(tmp_path, cluster, monkeypatch):
    sessions = trading_sessions(DAY, 3)
    space = search.parse_space(["cutoff_delta=-0.2:0.45", "mixer_cooldown_s=60:600"])
    kw = dict(n_trials=10, metric="total_return", sessions=sessions, seed=3, batch=4, study_name="parity")
    pools = record_pools(monkeypatch, search)
    local = search.run_search(BASE, space, db_path=str(tmp_path / "local.db"), workers=2, **kw)
    # three batches, each in two halves (the first part, then the survivors' whole range): two processes in all
    assert len(pools) == 1 and pools[0].spawned == 2 and not pools[0]._procs
    remote = search.run_search(BASE, space, db_path=str(tmp_path / "remote.db"), cluster=cluster.address, **kw)
    assert remote["where"].startswith(f"on the Dask cluster at {cluster.address}")
    assert trials(remote) == trials(local)
    assert any(t[1] == "pruned" for t in trials(local)), trials(local)  # the first-part path ran on both
    assert remote["best"] == local["best"] and remote["odds"] == local["odds"]
