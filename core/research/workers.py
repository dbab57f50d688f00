"""Worker processes for sweeps that stop when told to.

``concurrent.futures.ProcessPoolExecutor`` cannot stop a running task: cancelling leaves the workers running
their cells for minutes, and leaving its ``with`` block waits for them. Here the caller owns the processes:

* ``progress(done, total)`` is called every ``HEARTBEAT_S`` while cells run, not only when one ends, so a UI
  (Streamlit raises its stop exception inside that call) can interrupt a sweep whose cells take a minute;
* when ``progress`` returns False or raises anything (``BaseException``: Streamlit's StopException too), every
  worker is terminated, killed after ``GRACE_S`` if it is still there, and joined (reaped) before ``run_cells``
  returns or re-raises.

Workers are spawned (safe from threaded callers such as Streamlit); ``initializer(*initargs)`` runs once in each
before a run's jobs (the sweep hands over its scored feed that way, pickled once per worker, not once per cell).
``WorkerPool`` keeps the processes from one run to the next (a search's batches); ``run_cells`` is one run.

A spawned child first re-runs the parent's ``__main__`` (multiprocessing's "safe importing of the main module").
Under Streamlit, ``__main__`` is the page script being run (Streamlit installs it as ``sys.modules["__main__"]``
with ``__file__`` = app.py): every worker ran the whole app in bare mode, printing ~60 "missing ScriptRunContext"
lines and a "to view a Streamlit app" warning each, and building the app's context. When ``fn`` and
``initializer`` live in importable modules the workers need nothing from ``__main__``, so they are started
without it (``_main_left_out``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

HEARTBEAT_S = 0.2  # the longest wait between two progress calls while cells run
GRACE_S = 0.5  # after terminate (SIGTERM), a worker still alive is killed


class WorkerDied(RuntimeError):
    """A worker process ended without a result (killed from outside, out of memory, a crash in C code)."""


def _worker_main(tasks: Any, results: Any, me: int) -> None:
    """One worker: runs what its own queue says, in order. ``("setup", initializer, initargs)`` prepares it for the
    jobs that follow (a sweep's scored feed); ``("job", i, fn, job)`` runs one; None ends it."""
    while True:
        item = tasks.get()
        if item is None:
            return
        if item[0] == "setup":
            _, initializer, initargs = item
            if initializer is not None:
                initializer(*initargs)
            continue
        _, i, fn, job = item
        try:
            results.put((me, i, True, fn(job)))
        except Exception as e:  # a failing cell is reported, not a dead worker
            tb = traceback.format_exc()
            try:
                pickle.dumps(e)
                err: BaseException = e
            except Exception:
                err = RuntimeError(repr(e))
            results.put((me, i, False, (err, tb)))


class WorkerPool:
    """Worker processes that stay up from one ``run`` to the next: a search's batches (and their first-part and
    whole-range halves) reuse the same warm processes (imports, the compiled kernel) instead of spawning two new
    ones for each. Each worker has a queue of its own, so every worker is set up (``initializer(*initargs)``)
    before the jobs of a run, whatever it did before. A run that is cancelled or fails stops the processes (a
    stuck cell cannot be interrupted otherwise); the next run starts new ones. ``close`` (or leaving the ``with``
    block) ends them and reaps them."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._tasks: list[Any] = []
        self._results: Any = None
        self.spawned = 0  # processes started over the pool's life (a test counts them)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, n: int, fn: Callable[..., Any], initializer: Callable[..., None] | None) -> None:
        if self._procs and len(self._procs) >= n and all(p.exitcode is None for p in self._procs):
            return
        self._stop_all()
        self._results = self._ctx.Queue()
        self._tasks = [self._ctx.Queue() for _ in range(n)]
        self._procs = [self._ctx.Process(target=_worker_main, args=(q, self._results, k), daemon=True)
                       for k, q in enumerate(self._tasks)]
        with _main_left_out(fn, initializer):
            for p in self._procs:
                p.start()
        self.spawned += n

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *,
            initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
            progress: Callable[[int, int], bool | None] | None = None,
            on_workers: Callable[[list[int]], None] | None = None) -> tuple[dict[int, Any], bool]:
        """``run_cells`` on this pool's processes (see there); they stay up when every job finished."""
        if not jobs:
            return {}, False
        self._start(min(self.workers, len(jobs)), fn, initializer)
        procs = self._procs
        if on_workers is not None:
            on_workers([p.pid for p in procs if p.pid is not None])
        out: dict[int, Any] = {}
        cancelled = finished = False
        try:
            for q in self._tasks:
                q.put(("setup", initializer, initargs))
            sent = 0
            # at most two jobs queued per worker: a full pipe would block this thread (and its heartbeat)
            for _ in range(2):
                for q in self._tasks:
                    if sent < len(jobs):
                        q.put(("job", sent, fn, jobs[sent]))
                        sent += 1
            while len(out) < len(jobs):
                try:
                    me, i, ok, value = self._results.get(timeout=HEARTBEAT_S)
                except queue.Empty:
                    _check_alive(procs)
                else:
                    if not ok:
                        err, tb = value
                        raise err from RuntimeError(f"in the worker process:\n{tb}")
                    out[i] = value
                    if sent < len(jobs):
                        self._tasks[me].put(("job", sent, fn, jobs[sent]))
                        sent += 1
                if progress is not None and progress(len(out), len(jobs)) is False:
                    cancelled = True
                    break
            finished = not cancelled
        finally:
            if not finished:
                self._stop_all()
        return out, cancelled

    def close(self) -> None:
        """End the workers: asked to stop, then terminated if they do not, and reaped."""
        for q in self._tasks:
            with contextlib.suppress(Exception):
                q.put(None)
        _join(self._procs, deadline=time.monotonic() + 5.0)
        self._stop_all()

    def _stop_all(self) -> None:
        _stop(self._procs)
        for q in (*self._tasks, *([self._results] if self._results is not None else [])):
            q.cancel_join_thread()  # what is left in a queue is dropped: exiting must not wait on dead readers
            q.close()
        self._procs, self._tasks, self._results = [], [], None


def run_cells(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int,
              initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
              progress: Callable[[int, int], bool | None] | None = None,
              on_workers: Callable[[list[int]], None] | None = None) -> tuple[dict[int, Any], bool]:
    """Run ``fn(job)`` for every job in ``workers`` processes: ({job index: result}, cancelled).

    ``cancelled`` is True when ``progress`` returned False (the results are those finished by then). A job that
    raises stops the run and its exception is raised here; so is anything ``progress`` raises. In every case the
    worker processes are gone (terminated if need be, and reaped) when this returns or raises.
    ``on_workers(pids)`` is told the worker process ids once they are started."""
    with WorkerPool(workers) as pool:
        return pool.run(fn, jobs, initializer=initializer, initargs=initargs, progress=progress,
                        on_workers=on_workers)


_MAIN_SWAP = threading.Lock()


@contextlib.contextmanager
def _main_left_out(*callables: Callable[..., Any] | None) -> Iterator[None]:
    """While processes start: a ``__main__`` without a file or spec, so spawn tells the children to run no main
    module (it reads ``sys.modules["__main__"]`` when each process starts). Only when none of ``callables`` is
    defined in ``__main__``: a function of the caller's script still needs that script in the child."""
    main = sys.modules.get("__main__")
    if main is None or any(getattr(c, "__module__", None) == "__main__" for c in callables if c is not None):
        yield
        return
    bare = types.ModuleType("__main__")
    with _MAIN_SWAP:
        sys.modules["__main__"] = bare
        try:
            yield
        finally:
            if sys.modules.get("__main__") is bare:  # Streamlit may have installed another page's module meanwhile
                sys.modules["__main__"] = main


def _check_alive(procs: list[Any]) -> None:
    dead = [p for p in procs if p.exitcode is not None]
    if dead:
        raise WorkerDied(f"a sweep worker process ended without a result (exit code {dead[0].exitcode})")


def _join(procs: list[Any], *, deadline: float) -> None:
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))


def _stop(procs: list[Any]) -> None:
    """Terminate, then kill what is still there after the grace, and reap every process (no zombie left)."""
    alive = [p for p in procs if p.pid is not None and p.exitcode is None]
    for p in alive:
        p.terminate()
    _join(alive, deadline=time.monotonic() + GRACE_S)
    for p in alive:
        if p.exitcode is None:
            p.kill()
    _join(alive, deadline=time.monotonic() + GRACE_S)
