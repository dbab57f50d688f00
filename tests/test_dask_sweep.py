"""Sweeps on a Dask cluster (issue 18): a real `dask scheduler` and `dask worker` processes on 127.0.0.1, the
project's own sweep code on them, compared with the local sweep of the same grid. No mocks.

The cluster is started once for the module (scheduler + two single-thread workers); a test that kills a worker
leaves the next one a fresh replacement (``dask_cluster``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import distributed  # pinned in requirements.txt: a missing install fails here, it is not skipped
import pytest
import streamlit as st

from core.config import load_settings
from core.research.__main__ import main as cli
from core.research.cluster import ClusterError, cluster_status
from core.research.replay import SweepClock, grid_cells, parse_sweep, run_sweep
from core.runtime import stop_all
from core.universe import DEFAULT_UNIVERSE
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket
from tests.test_research_page import click, frame, set_range, start_app, texts

REPO = Path(__file__).resolve().parents[1]
DAY = date(2025, 3, 3)  # a Monday in the past
BASE = {"auto_mode": True}
GRID_3X3 = {"cutoff_delta": [-0.02, 0.0, 0.02], "mixer_cooldown_s": [60, 180, 300]}
START_DEADLINE_S = 60.0  # a busy 2-core machine starts a Python process with dask in a few seconds


def dask_cli(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("dask")  # the venv's `dask` command, as a user runs it
    if exe.exists():
        return [str(exe), *args]
    module = {"scheduler": "distributed.cli.dask_scheduler", "worker": "distributed.cli.dask_worker"}[args[0]]
    return [sys.executable, "-m", module, *args[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalDask:
    """A scheduler and worker processes, each started as `dask scheduler` / `dask worker` would be by hand."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}  # the workers import core.research
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self.client = None
        self._n = 0

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process (teardown)
        return subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start(self, port: int = 0) -> None:
        info = self.tmp / "scheduler.json"
        self.scheduler = self._spawn("scheduler", dask_cli(
            "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", "--scheduler-file", str(info)))
        deadline = time.monotonic() + START_DEADLINE_S
        while not (info.exists() and info.stat().st_size):
            assert self.scheduler.poll() is None, (self.tmp / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler wrote no scheduler file"
            time.sleep(0.05)
        while not self.address:  # the file may be seen half-written
            try:
                self.address = json.loads(info.read_text())["address"]
            except (json.JSONDecodeError, KeyError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        self.client = distributed.Client(self.address, timeout=START_DEADLINE_S, set_as_default=False)

    def add_worker(self) -> subprocess.Popen:
        self._n += 1
        w = self._spawn(f"worker{self._n}", dask_cli(
            "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
            "--host", "127.0.0.1", "--death-timeout", "60", "--local-directory", str(self.tmp / f"w{self._n}")))
        self.workers.append(w)
        return w

    def live(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def ensure_workers(self, n: int) -> None:
        for _ in range(n - len(self.live())):
            self.add_worker()
        deadline = time.monotonic() + START_DEADLINE_S
        while len(self.client.nthreads()) != n:  # a killed worker gone from the scheduler, new ones registered
            assert time.monotonic() < deadline, f"{len(self.client.nthreads())} workers, expected {n}"
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        return self.client.run(os.getpid)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for group in (self.workers, [self.scheduler] if self.scheduler else []):  # workers first: they say goodbye
            for p in group:
                if p.poll() is None:
                    p.terminate()
            for p in group:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory) -> Iterator[LocalDask]:
    c = LocalDask(tmp_path_factory.mktemp("dask"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def dask_cluster(_cluster: LocalDask) -> LocalDask:
    _cluster.ensure_workers(2)
    return _cluster


def file_market(days: int = 2) -> ReplayMarket:
    """Bars as a user's file would bring them: a frame, not a seed (the cluster gets them scattered)."""
    return ReplayMarket(SyntheticMarket(seed=11, universe=DEFAULT_UNIVERSE, anchor=DAY).frame_for_sessions(days))


def test_a_3x3_grid_on_two_workers_gives_the_local_rows(dask_cluster):
    local = run_sweep(BASE, GRID_3X3, days=1, seed=7, start=DAY, workers=1)
    seen: list[tuple[int, int]] = []
    rows = run_sweep(BASE, GRID_3X3, days=1, seed=7, start=DAY, cluster=dask_cluster.address,
                     progress=lambda d, t: seen.append((d, t)))
    assert len(rows) == 9 and list(rows) == list(local)
    assert [(r["cutoff_delta"], r["mixer_cooldown_s"]) for r in rows] == \
        [(c["cutoff_delta"], c["mixer_cooldown_s"]) for c in grid_cells(GRID_3X3)]
    assert rows.where == f"on the Dask cluster at {dask_cluster.address} (2 workers, 2 threads)"
    assert seen[-1] == (9, 9) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # the synthetic market was made from the seed on each worker (both ran cells), not shipped
    made = dask_cluster.client.run(lambda: [k[:4] for k in __import__("core.research.cluster").research.cluster._FEEDS])
    assert len(made) == 2 and all([7, DAY.isoformat(), None, 1] in [list(k) for k in v] for v in made.values()), made


def test_a_worker_killed_mid_sweep_leaves_every_cell_once(dask_cluster):
    market = file_market()
    start = market.sessions[1]
    local = run_sweep(BASE, GRID_3X3, days=1, seed=0, start=start, market=market, workers=1)
    pids = dask_cluster.pids()
    killed: dict[str, object] = {}

    def kill_after_first_result(done: int, total: int) -> None:
        if done < 1 or killed:
            return
        # the file's bars went to the cluster once, as one scattered copy on each worker, not once per cell
        feeds = dask_cluster.client.run_on_scheduler(lambda dask_scheduler: [
            sorted(ws.address for ws in ts.who_has) for key, ts in dask_scheduler.tasks.items()
            if str(key).startswith("MarketFeed-")])  # a scattered object's key names its type
        assert feeds == [sorted(pids)], feeds
        deadline = time.monotonic() + 10
        while not killed:  # a worker in the middle of a cell: its cell must be run again elsewhere
            busy = {w: keys for w, keys in dask_cluster.client.processing().items() if keys}
            if busy:
                worker, keys = next(iter(busy.items()))
                os.kill(pids[worker], signal.SIGKILL)
                killed.update(worker=worker, keys=list(keys), done=done)
            assert time.monotonic() < deadline, "no worker was running a cell"

    rows = run_sweep(BASE, GRID_3X3, days=1, seed=0, start=start, market=market, cluster=dask_cluster.address,
                     progress=kill_after_first_result)
    assert killed and killed["done"] < 9
    victim = next(p for p in dask_cluster.workers if p.pid == pids[killed["worker"]])
    assert victim.wait(10) == -signal.SIGKILL
    cells = [(r["cutoff_delta"], r["mixer_cooldown_s"]) for r in rows]
    assert len(cells) == len(set(cells)) == 9  # complete, and no cell counted twice
    assert list(rows) == list(local)
    assert len(dask_cluster.client.nthreads()) == 1  # the survivor finished the sweep


def test_cells_a_settings_rule_refuses_are_reported_not_run(dask_cluster, capsys):
    grid = {"risk_per_trade": [0.02, 0.03], "max_concurrent_risk": [0.02, 0.04], "mixer_cooldown_s": [60, 180]}
    rows = run_sweep(BASE, grid, days=1, seed=7, start=DAY, cluster=dask_cluster.address)
    local = run_sweep(BASE, grid, days=1, seed=7, start=DAY, workers=1)
    assert list(rows) == list(local) and rows.refused == local.refused
    # equal risk and cap is allowed (runs); a trade risking more than the cap is refused, naming both values
    assert {(r["risk_per_trade"], r["max_concurrent_risk"]) for r in rows} == {(0.02, 0.02), (0.02, 0.04),
                                                                               (0.03, 0.04)}
    assert [(r["risk_per_trade"], r["max_concurrent_risk"], r["mixer_cooldown_s"]) for r in rows.refused] == \
        [(0.03, 0.02, 60), (0.03, 0.02, 180)]
    assert all("RISK_PER_TRADE=0.03 is above MAX_CONCURRENT_RISK=0.02" in r["refused"] for r in rows.refused)
    # the same grid from the command line: refused cells in the JSON, progress on stderr
    code = cli(["--days", "1", "--auto", "--start", DAY.isoformat(), "--cluster", dask_cluster.address,
                "--sweep", "risk_per_trade=0.02,0.03", "max_concurrent_risk=0.02,0.04", "cooldown=60,180"],
               today=date(2025, 6, 2))
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out)
    assert printed["grid"] == list(rows) and printed["refused"] == rows.refused
    lines = [ln for ln in err.splitlines() if ln.startswith("sweep (Dask cluster")]
    assert lines[-1].split(": ", 1)[1].startswith("6/6 cells,") and lines[-1].endswith("done")
    assert any("elapsed, about" in ln or "under 1 s left" in ln for ln in lines), lines


def test_a_grid_every_cell_of_which_is_refused_is_an_error():
    with pytest.raises(ValueError, match=r"every cell of the grid is refused .*MAX_CONCURRENT_RISK=0.02"):
        run_sweep(BASE, {"risk_per_trade": [0.03, 0.05], "max_concurrent_risk": [0.02]}, days=1, seed=7, start=DAY)


def test_progress_says_cells_elapsed_and_time_left_at_the_pace_so_far():
    now = [100.0]
    clock = SweepClock(now=lambda: now[0])
    assert clock.text(0, 10) == "0/10 cells, under 1 s elapsed, time left: estimating"
    now[0] = 120.0
    assert clock.text(4, 10) == "4/10 cells, 20 s elapsed, about 30 s left"
    now[0] = 100.0 + 3 * 3600
    assert clock.text(9, 10) == "9/10 cells, 3 h 00 min elapsed, about 20 min 00 s left"
    assert clock.text(10, 10) == "10/10 cells, 3 h 00 min elapsed, done"


def test_the_grid_takes_any_numeric_setting_and_refuses_bad_ones():
    g = parse_sweep(["delta=-0.02:0.02:0.02", "cooldown=60,120", "stop_loss_pct=0.01,0.02",
                     "tier_a_interval_s=30:60:30", "basket_neg_ratio=0.5,0.6"])
    assert g == {"cutoff_delta": [-0.02, 0.0, 0.02], "mixer_cooldown_s": [60, 120], "stop_loss_pct": [0.01, 0.02],
                 "tier_a_interval_s": [30, 60], "basket_neg_ratio": [0.5, 0.6]}
    assert all(type(v) is int for v in g["tier_a_interval_s"] + g["mixer_cooldown_s"])
    assert len(grid_cells(g)) == 3 * 2 * 2 * 2 * 2
    for bad, words in ((["cooldown=60.5"], "MIXER_COOLDOWN_S='60.5'"), (["stop_loss_pct=0,0.01"], "greater than 0"),
                       (["tier_a_tickers=1"], "not a numeric setting"), (["colour=1"], "not a setting"),
                       (["seed=1,2"], "one sweep per seed"), (["cooldown=60,60"], "given twice"),
                       (["delta=0", "cutoff_delta=0.01"], "already swept"),
                       (["cutoff_delta=-0.5:0.5:0.00001"], "at most 10,000")):
        with pytest.raises(ValueError, match=words):
            parse_sweep(bad)


def running_cells(c: LocalDask) -> int:
    """Task threads busy on the workers: a cancelled task the scheduler forgot still runs until it returns."""
    return sum(c.client.run(lambda dask_worker: len(dask_worker.active_threads)).values())


def test_cancel_stops_the_cells_running_on_the_workers(dask_cluster):
    grid = {"cutoff_delta": [-0.02, 0.0, 0.02, 0.04]}  # 4 cells of several seconds each on 2 workers
    marks: dict[str, float] = {}

    def cancel_once_both_run(done: int, total: int) -> bool:
        if running_cells(dask_cluster) < 2:
            return True
        marks["cancel"] = time.monotonic()
        return False

    rows = run_sweep(BASE, grid, days=15, seed=7, start=DAY, cluster=dask_cluster.address,
                     progress=cancel_once_both_run)
    returned = time.monotonic()
    assert rows.cancelled and "cancel" in marks and len(rows) < 4
    assert returned - marks["cancel"] < 2.0
    # the running cells stop at their next check (CANCEL_CHECK_S = 1 s), not at their end seconds later
    deadline = marks["cancel"] + 2.5
    while running_cells(dask_cluster):
        assert time.monotonic() < deadline, "cells still running on the workers after the cancel"
        time.sleep(0.05)
    assert not dask_cluster.client.processing() or not any(dask_cluster.client.processing().values())


def test_an_unreachable_scheduler_is_named_within_the_connect_timeout(dask_cluster, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address} within 1 s"):
        run_sweep(BASE, GRID_3X3, days=1, seed=7, start=DAY, cluster=address, connect_timeout_s=1.0)
    assert 0.9 <= time.monotonic() - t0 < 1.0 + 4.0  # refused connections are retried until the timeout, no longer
    # the same timeout reaches a scheduler that answers
    assert cluster_status(dask_cluster.address, 1.0).workers == 2
    code = cli(["--days", "1", "--sweep", "cooldown=60,180", "--cluster", address, "--set",
                "DASK_CONNECT_TIMEOUT_S=1"], today=date(2025, 6, 2))
    assert code == 2 and f"error: cannot reach the Dask scheduler at {address}" in capsys.readouterr().err
    with pytest.raises(Exception, match="DASK_SCHEDULER='localhost:8786': expected tcp://host:port"):
        load_settings(dask_scheduler="localhost:8786")


@pytest.fixture
def research_page(tmp_path, monkeypatch) -> Iterator[object]:
    monkeypatch.setenv("DB_PATH", str(tmp_path / "r.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("DASK_CONNECT_TIMEOUT_S", "1")
    yield lambda: start_app(tmp_path / "r.db")
    st.cache_resource.clear()
    stop_all()


def small_sweep(at, *, more: str = "") -> None:
    set_range(at, DAY, DAY)
    at.slider(key="s_delta").set_value((-0.02, 0.02))
    at.selectbox(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([60])
    at.selectbox(key="s_workers").set_value(1)
    at.text_area(key="s_more").set_value(more)


def test_the_page_names_an_unreachable_scheduler_and_still_sweeps_here(research_page, monkeypatch, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    monkeypatch.setenv("DASK_SCHEDULER", address)
    at = research_page()
    assert any(address in e and "cannot reach" in e for e in texts(at, "error")), texts(at, "error")
    assert at.radio(key="s_where").value == "here"  # the local run is what the page offers
    small_sweep(at)
    click(at, "Run sweep")
    assert len(frame(at, "sweep")) == 3
    assert any("run here" in c.value for c in at.caption), [c.value for c in at.caption]
    # a scheduler comes up there (still without workers): asked again on request, the page says what it says now
    late = LocalDask(tmp_path)
    try:
        late.start(port)
        at.button(key="s_recheck").click().run()
        assert any(f"the Dask scheduler at {address} has no workers" in e for e in texts(at, "error")), \
            texts(at, "error")
    finally:
        late.stop()


def test_the_page_sweeps_three_parameters_on_the_cluster(research_page, monkeypatch, dask_cluster):
    monkeypatch.setenv("DASK_SCHEDULER", dask_cluster.address)
    at = research_page()
    assert any("on the Dask cluster" in c.value and "2 workers" in c.value for c in at.caption)
    assert at.radio(key="s_where").value == "cluster"
    small_sweep(at, more="risk_per_trade=0.02,0.03")  # 0.03 is above the default cap of 0.02: refused
    click(at, "Run sweep")
    table = next(d.value for d in at.dataframe if "total_return" in d.value.columns)
    refused = next(d.value for d in at.dataframe if "refused" in d.value.columns)
    assert len(table) == 3 and set(table["risk_per_trade"]) == {0.02}
    assert len(refused) == 3 and set(refused["risk_per_trade"]) == {0.03}
    assert any("3 cells refused" in w and "MAX_CONCURRENT_RISK=0.02" in w for w in texts(at, "warning"))
    assert any(f"on the Dask cluster at {dask_cluster.address}" in c.value for c in at.caption)
    # three parameters: two chosen axes, the third folded as the title says
    assert at.selectbox(key="s_x").value == "cutoff_delta" and at.selectbox(key="s_y").value == "mixer_cooldown_s"
    at.selectbox(key="s_y").set_value("risk_per_trade").run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("by cutoff delta × risk_per_trade (the best value over mixer_cooldown_s)" in t for t in titles), \
        titles


def test_a_scheduler_lost_mid_sweep_is_a_clear_error(tmp_path):
    lone = LocalDask(tmp_path)  # its own scheduler: this test kills it
    try:
        lone.start()
        lone.ensure_workers(1)
        killed: list[float] = []

        def kill_scheduler(done: int, total: int) -> None:
            if not killed:
                lone.scheduler.send_signal(signal.SIGKILL)
                killed.append(time.monotonic())

        with pytest.raises(ClusterError, match=f"lost the Dask scheduler at {lone.address} during the sweep"):
            run_sweep(BASE, {"cutoff_delta": [-0.02, 0.0, 0.02]}, days=5, seed=7, start=DAY, cluster=lone.address,
                      connect_timeout_s=2.0, progress=kill_scheduler)
        assert killed and time.monotonic() - killed[0] < 2.0 + 8.0  # the client's reconnect attempts, then the error
    finally:
        lone.stop()
