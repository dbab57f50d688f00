"""Cancelling a sweep stops its worker processes at once (core.research.workers), whichever way the caller
cancels: ``progress`` returning False, or raising (Streamlit raises its stop exception inside that call)."""

from __future__ import annotations

import os
import signal
import time
from datetime import date

import pytest

from core.research.replay import run_sweep
from core.research.workers import WorkerDied, run_cells

START = date(2025, 3, 3)
SESSIONS = 30  # a cell takes seconds: a cancel lands while cells run
GRID = {"cutoff_delta": [-0.04, -0.02, 0.0, 0.02, 0.04, 0.06]}
CANCEL_AFTER_S = 1.5  # after the workers started: they are booting or running their first cells by then


class Stop(Exception):
    """Stands in for Streamlit's StopException, raised from inside the progress callback."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a zombie (exited, not reaped) still answers: reaping is part of stopping
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["return False", "raise"])
def test_a_cancelled_sweep_leaves_no_worker_running(how):
    pids: list[int] = []
    calls: list[float] = []
    marks: dict[str, float] = {}

    def on_workers(p: list[int]) -> None:
        pids.extend(p)
        marks["started"] = time.monotonic()

    def progress(done: int, total: int) -> bool | None:
        now = time.monotonic()
        calls.append(now)
        if "cancel" not in marks and "started" in marks and now - marks["started"] >= CANCEL_AFTER_S:
            marks["cancel"] = now
            if how == "raise":
                raise Stop
            return False
        return None

    kwargs = {"days": SESSIONS, "seed": 5, "start": START, "workers": 2, "progress": progress,
              "on_workers": on_workers}
    rows = None
    if how == "raise":
        with pytest.raises(Stop):
            run_sweep({"auto_mode": True}, GRID, **kwargs)
    else:
        rows = run_sweep({"auto_mode": True}, GRID, **kwargs)
    returned = time.monotonic()
    assert "cancel" in marks and len(pids) == 2
    # while cells ran, progress came every HEARTBEAT_S (0.2 s), not only when a cell ended (slack: a busy machine)
    beats = [marks["started"], *(c for c in calls if marks["started"] <= c <= marks["cancel"])]
    assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.0
    deadline = marks["cancel"] + 3.0
    while any(alive(p) for p in pids):  # terminated, killed if need be, and reaped
        assert time.monotonic() < deadline, f"worker(s) {[p for p in pids if alive(p)]} outlived the cancel"
        time.sleep(0.05)
    assert returned - marks["cancel"] < 3.0
    if rows is not None:
        assert rows.cancelled and len(rows) < len(GRID["cutoff_delta"])


def test_worker_results_come_back_by_job_and_a_failing_job_raises_here():
    assert run_cells(int, ["1", "2", "3", "4"], workers=2) == ({0: 1, 1: 2, 2: 3, 3: 4}, False)
    pids: list[int] = []
    with pytest.raises(ValueError, match="invalid literal"):
        run_cells(int, ["1", "x", "3"], workers=2, on_workers=pids.extend)
    assert len(pids) == 2 and not any(alive(p) for p in pids)  # reaped before the error came back


def test_a_worker_killed_from_outside_is_an_error_not_a_hang():
    victims: list[int] = []

    def progress(done: int, total: int) -> None:
        if not victims:  # the first heartbeat: the workers run (or boot); one of them dies
            victims.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)

    pids: list[int] = []
    with pytest.raises(WorkerDied, match="exit code -9"):
        run_cells(time.sleep, [30.0, 30.0, 30.0], workers=2, progress=progress, on_workers=pids.extend)
    assert victims and not any(alive(p) for p in pids)


def test_a_pool_keeps_its_workers_across_runs_and_sets_each_up_for_every_run():
    from core.research.workers import WorkerPool
    from tests.fakes import pool_jobs

    with WorkerPool(2) as pool:
        first, cancelled = pool.run(pool_jobs.tag_and_pid, list(range(6)), initializer=pool_jobs.set_tag,
                                    initargs=("first part",))
        assert not cancelled and sorted(first) == list(range(6))
        assert {r[0] for r in first.values()} == {"first part"} and [first[i][2] for i in range(6)] == list(range(6))
        pids: list[int] = []
        second, _ = pool.run(pool_jobs.tag_and_pid, list(range(6)), initializer=pool_jobs.set_tag,
                             initargs=("whole range",), on_workers=pids.extend)
        # the same two processes (warm), each set up again: no job of the second run saw the first run's feed
        assert {r[0] for r in second.values()} == {"whole range"}
        assert {r[1] for r in second.values()} <= {r[1] for r in first.values()} == set(pids)
        assert pool.spawned == 2 and all(alive(p) for p in pids)
        # a failing job stops the processes; the next run starts new ones and works
        with pytest.raises(ValueError, match="invalid literal"):
            pool.run(int, ["1", "x"])
        assert not any(alive(p) for p in pids)
        again, _ = pool.run(pool_jobs.tag_and_pid, [7, 8], initializer=pool_jobs.set_tag, initargs=("again",))
        assert {r[0] for r in again.values()} == {"again"} and pool.spawned == 4
        last = {r[1] for r in again.values()}
    assert not any(alive(p) for p in last)  # closed with the block, and reaped
