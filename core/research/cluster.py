"""Sweep cells as tasks on a Dask cluster (``dask.distributed``), for grids that outgrow one machine.

``run_sweep(..., cluster="tcp://host:8786")`` hands its cells here; without a cluster nothing of this module runs
and the local processes of ``core.research.workers`` sweep as before. We do not schedule anything ourselves:

* every cell is one ``Client.submit`` task; results are collected as they complete, keyed by the cell's index,
  and each completed future is released at once. A worker that dies takes its running and stored tasks with it and
  the scheduler runs them again elsewhere; a cell still counts once, because only the first result of its index
  is kept and its future is gone after that (no recomputation of a result already fetched);
* the bars reach each worker once: a synthetic market is regenerated from its seed on the worker (and kept there
  for the sweep's other cells, ``_worker_feed``); a file's or Alpaca's bars are scored here and sent with
  ``Client.scatter(feed, broadcast=True)``, so each task carries only the key of that copy, never the bars;
* a cell gets its settings resolved here, whole (``shipped_settings``): a worker's own environment and ``.env``
  cannot change a result, and no secret (broker keys, Redis, Slack, the OpenAI key) leaves this machine;
* cancelling (``progress`` returns False or raises) cancels the tasks not finished and sets a Dask ``Event`` that
  running cells poll every ``CANCEL_CHECK_S``, so workers stop within about a second instead of finishing
  minutes-long cells nobody waits for; the client is closed in every case.

Workers need this project's code importable (run ``dask worker`` from a checkout with ``PYTHONPATH=.``) and the
same pinned packages (requirements.txt). README, "Running on more than one machine", shows the commands.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from datetime import date
from typing import Any

from core.config import Settings, check_scheduler_address, secret_fields
from core.feed import MarketFeed

CANCEL_CHECK_S = 1.0  # how often a running cell asks the scheduler whether its sweep was cancelled
NOT_SHIPPED = tuple(sorted(secret_fields()))  # every secret setting (core.config.secret_fields)
FEEDS_KEPT = 2  # scored synthetic feeds a worker keeps (one sweep at a time, in practice)
# what a task runs, handed in by the replay (core.research.replay: replay_cell, shared_feed)
CellFn = Callable[..., "dict[str, Any] | None"]
FeedFn = Callable[..., MarketFeed]


class ClusterError(RuntimeError):
    """The Dask cluster cannot run the sweep: the scheduler is unreachable or lost, or it has no worker."""


@dataclass(frozen=True)
class CellJob:
    """One cell as a task receives it: its whole settings, the cell's values (for its row) and the range."""

    settings: Settings
    cell: dict[str, Any]
    days: int
    seed: int
    start_s: str
    end_s: str | None


@dataclass(frozen=True)
class ClusterStatus:
    address: str
    workers: int = 0
    threads: int = 0
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return self.error
        return (f"on the Dask cluster at {self.address}: {_plural(self.workers, 'worker')}, "
                f"{_plural(self.threads, 'thread')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def shipped_settings(s: Settings) -> Settings:
    """A cell's settings as sent to a worker: every value resolved here, and no secret at all (every SecretStr
    setting is None: a replay never calls a broker, Redis, Slack or the model, even with LLM_ENABLED=1, where its
    gate only queues the calls). Pickled tasks cross the network and sit in the workers' memory."""
    return s.model_copy(update=dict.fromkeys(NOT_SHIPPED))


def connect(address: str, timeout_s: float) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``, or ClusterError naming it after ``timeout_s``."""
    from distributed import Client

    try:
        address = check_scheduler_address(address)
    except ValueError as e:
        raise ClusterError(f"Dask scheduler {address!r}: {e}") from None
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError):
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
                           f"(DASK_CONNECT_TIMEOUT_S): is `dask scheduler` running there, and its port open "
                           f"from here?") from None


def _workers(client: Any, address: str, timeout_s: float) -> tuple[int, int]:
    """(workers, threads) of the cluster, waiting up to ``timeout_s`` for a first worker."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise ClusterError(f"the Dask scheduler at {address} has no workers (waited {timeout_s:g} s): start one "
                           f"with `dask worker {address}`") from None
    threads = client.nthreads()
    return len(threads), sum(threads.values())


def cluster_status(address: str, timeout_s: float) -> ClusterStatus:
    """Where a sweep would run and with how many workers; ``error`` says why it cannot (never raises)."""
    try:
        client = connect(address, timeout_s)
    except ClusterError as e:
        return ClusterStatus(address, error=str(e))
    try:
        n, threads = len(client.nthreads()), sum(client.nthreads().values())
        if n == 0:
            return ClusterStatus(address, error=f"the Dask scheduler at {address} has no workers: start one with "
                                                f"`dask worker {address}`")
        return ClusterStatus(address, n, threads)
    finally:
        client.close()


def run_cells(address: str, jobs: list[CellJob], *, feed: MarketFeed | None, timeout_s: float,
              cell: CellFn, make_feed: FeedFn,
              progress: Callable[[int, int], bool | None] | None = None) -> tuple[dict[int, Any], bool, str]:
    """Run every job as a task of the cluster at ``address``: ({job index: row}, cancelled, where it ran).

    ``cell`` replays one job's cell into its row (``core.research.replay.replay_cell``) and ``make_feed`` scores
    a market (``core.research.replay.shared_feed``): the replay hands them in, so this module never imports it
    (the workers import them by name). ``feed``: bars scored here, sent to every worker once; None: each worker
    regenerates the synthetic market of the jobs' seed with ``make_feed``. ``progress(done, total)`` is called
    when a cell ends and at least every ``workers.HEARTBEAT_S``; returning False (or raising) cancels the rest. A
    cell that raises stops the sweep with its error; a cell whose workers kept dying (Dask gives up after a few)
    is a ClusterError."""
    from distributed import Event, KilledWorker, wait

    from core.research.workers import HEARTBEAT_S

    client = connect(address, timeout_s)
    tag = uuid.uuid4().hex[:12]
    cancel = f"sweep-{tag}-cancel"
    futures: dict[Any, int] = {}
    pending: set[Any] = set()
    out: dict[int, Any] = {}
    cancelled = False
    where = f"on the Dask cluster at {address}"
    try:
        n, threads = _workers(client, address, timeout_s)
        where = f"on the Dask cluster at {address} ({_plural(n, 'worker')}, {_plural(threads, 'thread')})"
        data = client.scatter(feed, broadcast=True, hash=False) if feed is not None else None
        for i, job in enumerate(jobs):
            futures[client.submit(_cell_task, job, data, cancel, cell, make_feed, key=f"sweep-{tag}-cell-{i}",
                                  pure=False)] = i
        pending = set(futures)
        while pending:
            try:
                with client.as_current():  # ``wait`` asks the default client; this one is not made the default
                    done, _ = wait(list(pending), timeout=HEARTBEAT_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            except CancelledError:  # the client gave up on a scheduler that went away: it cancels every future
                raise ClusterError(f"lost the Dask scheduler at {address} during the sweep "
                                   f"({len(out)}/{len(jobs)} cells done)") from None
            for f in done:
                i = futures[f]
                try:
                    row = f.result()
                except KilledWorker as e:
                    raise ClusterError(f"a sweep cell ({_cell_text(jobs[i].cell)}) was on every worker that died "
                                       f"under it ({e}); the sweep stops") from None
                except CancelledError:
                    raise ClusterError(f"lost the Dask scheduler at {address} during the sweep "
                                       f"({len(out)}/{len(jobs)} cells done)") from None
                pending.discard(f)
                f.release()  # fetched: the scheduler must not recompute it if its worker dies now
                if row is None:  # the cell saw the sweep's cancel event: only a cancel sets it
                    cancelled = True
                    break
                out.setdefault(i, row)
            if cancelled:
                break
            if client.status != "running":
                raise ClusterError(f"lost the Dask scheduler at {address} during the sweep "
                                   f"({len(out)}/{len(jobs)} cells done)")
            if progress is not None and progress(len(out), len(jobs)) is False:
                cancelled = True
                break
    finally:
        if pending:
            # best effort: the scheduler may be gone; closing the client releases every task all the same
            with contextlib.suppress(Exception):
                Event(cancel, client=client).set()  # running cells stop at their next check
                client.cancel(list(pending), force=True)
        client.close()
    return out, cancelled, where


def _cell_text(cell: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items())


# ---------------------------------------------------------------- on the worker
_FEEDS: OrderedDict[tuple[Any, ...], MarketFeed] = OrderedDict()
_FEEDS_LOCK = threading.Lock()


def _worker_feed(job: CellJob, shared_feed: FeedFn) -> MarketFeed:
    """The synthetic market of the job's seed, scored once per worker process and kept for the sweep's other
    cells (``shared_feed``: the same function the local sweep scores its feed with, so the bars are the same)."""
    s = job.settings
    key = (job.seed, job.start_s, job.end_s, job.days, s.strategy, s.tier_a_tickers, s.tier_b_tickers,
           s.bench_tickers, s.baskets_json)
    with _FEEDS_LOCK:  # a worker with several threads scores it once
        feed = _FEEDS.get(key)
        if feed is None:
            feed = shared_feed(s, days=job.days, seed=job.seed, start=date.fromisoformat(job.start_s),
                               end=date.fromisoformat(job.end_s) if job.end_s else None)
            _FEEDS[key] = feed
            while len(_FEEDS) > FEEDS_KEPT:
                _FEEDS.popitem(last=False)
        else:
            _FEEDS.move_to_end(key)
    return feed


class _CancelCheck:
    """A running cell's ``progress``: False once the sweep's cancel event is set (asked at most every
    ``CANCEL_CHECK_S``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.next = time.monotonic() + CANCEL_CHECK_S
        self.event: Any = None

    def __call__(self, _done: int, _total: int) -> bool:
        now = time.monotonic()
        if now < self.next:
            return True
        self.next = now + CANCEL_CHECK_S
        try:
            from distributed import Event

            if self.event is None:
                self.event = Event(self.name)
            return not self.event.is_set()
        except Exception:  # noqa: BLE001 - the scheduler unreachable: the cell goes on; the client decides
            return True


def _cell_task(job: CellJob, feed: MarketFeed | None, cancel: str, replay_cell: CellFn,
               shared_feed: FeedFn) -> dict[str, Any] | None:
    """A Dask task: one cell's row (None when its sweep was cancelled while it ran)."""
    return replay_cell(job.settings, job.cell, days=job.days, seed=job.seed, start_s=job.start_s, end_s=job.end_s,
                       feed=feed if feed is not None else _worker_feed(job, shared_feed),
                       progress=_CancelCheck(cancel))
