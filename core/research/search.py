"""Search over any numeric settings with Optuna's TPE sampler, trial by trial through the sweep's machinery.

A grid tries every cell; a search asks Optuna for the next settings worth trying, a batch at a time:

* ``parse_space(["cutoff_delta=-0.2:0.4", "risk_per_trade=0.001:0.02:log", "mixer_cooldown_s=30:600:int"])``
  checks every range against its setting (the CLI's ``--space``; see ``parse_space``);
* a trial is a sweep cell: each batch of ``batch`` trials is asked of the study (``study.ask``), replayed by
  ``core.research.replay.run_cell_list`` (local processes or the Dask cluster, the same rows either way) and told
  back (``study.tell``). The sampler is ``TPESampler(seed=seed + trials already in the study)``: a batch's settings
  depend only on the seed and the study's history, never on where or how fast its cells ran, and a resumed study
  does not draw its first trials again;
* pruning (``prune``): each batch first replays the first ``PRUNE_SHARE`` of the sessions; a trial whose figure
  there is in the bottom ``PRUNE_PERCENTILE`` % of the finished trials' (Optuna's ``PercentilePruner``, after
  ``PRUNE_STARTUP`` finished trials) is pruned and never replays the whole range;
* the study lives in the app's SQLite database (Optuna's RDB storage, ``sqlite:///<DB_PATH>``) under its name: run
  the same search again (``--study NAME``, or the same inputs, which give the same default name) and it continues,
  adding trials. Each finished trial keeps its sweep row and its per-session returns as user attributes, so the
  whole study's odds (``core.research.overfitting``) are computed from the study alone;
* cancelling (``progress`` returns False, or raises) stops the batch; trials that finished are kept, the rest are
  marked failed (Optuna's state for "did not finish"), so a resumed study neither counts nor reruns them.

No Streamlit here; the Research page and the CLI (``--search N``) call ``run_search``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from core.config import ConfigError, Settings, load_settings, secret_fields
from core.metrics.figures import ANNUALISED, MIN_ANNUALISED_SESSIONS
from core.research import overfitting
from core.research.walkforward import LOWER_IS_BETTER, metric_names
from core.research.workers import WorkerPool

DEFAULT_BATCH = 4  # trials asked at once: the same on 1, 2 or 40 workers, so the trials do not depend on them
STARTUP_TRIALS = 8  # TPE samples at random until this many trials finished (Optuna's default is 10)
PRUNE_SHARE = 1 / 3  # the first part of the range a trial is judged on before it may be pruned
PRUNE_PERCENTILE = 25.0  # "clearly behind": in the bottom quarter of the finished trials there
PRUNE_STARTUP = 5  # finished trials needed before anything is pruned
MAX_TRIALS = 10_000  # as a sweep's MAX_CELLS: a typo must not queue a million replays
ROW, RETURNS, REFUSED, NO_VALUE = "row", "returns", "refused", "no_value"  # trial user attributes
CONFIG = "config"  # the study's user attribute: what it searches, on which data (a resume must match it)


class SearchError(ValueError):
    """A search that cannot run; the message names the option or setting at fault."""


# ---------------------------------------------------------------- the space
@dataclass(frozen=True)
class Dim:
    """One searched setting: its range [lo, hi], on a log scale or not, whole numbers or not."""

    name: str
    lo: float
    hi: float
    log: bool = False
    integer: bool = False

    def distribution(self) -> Any:
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.lo), int(self.hi), log=self.log)
        return FloatDistribution(self.lo, self.hi, log=self.log)

    def text(self) -> str:
        return f"{self.name}={self.lo:g}:{self.hi:g}" + (":log" if self.log else "") + (
            ":int" if self.integer else "")


def parse_space(items: Sequence[str], option: str = "--space") -> dict[str, Dim]:
    """``["NAME=LOW:HIGH[:log|int]", ...]`` -> {setting: Dim}. NAME is any numeric setting (any case, or an alias
    of ``--set``); LOW and HIGH are checked against that setting's own rule (its bounds and type: an int setting
    searches whole numbers); ``log`` needs a range above zero. Every refusal names the item and the setting."""
    from core.research.replay import NOT_SWEPT, SWEEP_ALIASES, sweep_value

    space: dict[str, Dim] = {}
    if not items:
        raise SearchError(f"{option}: give at least one NAME=LOW:HIGH to search")
    for item in items:
        if "=" not in item:
            raise SearchError(f"{option} {item!r}: expected NAME=LOW:HIGH[:log|int]")
        raw, spec = (s.strip() for s in item.split("=", 1))
        name = SWEEP_ALIASES.get(raw.lower(), raw.lower())
        parts = [p.strip() for p in spec.split(":")]
        flags = [p.lower() for p in parts[2:]]
        if len(parts) < 2 or len(parts) > 4 or any(f not in ("log", "int") for f in flags) or \
                len(set(flags)) != len(flags):
            raise SearchError(f"{option} {item!r}: expected NAME=LOW:HIGH, optionally :log and/or :int")
        if name in NOT_SWEPT:
            raise SearchError(f"{option} {item!r}: {name} cannot be searched: {NOT_SWEPT[name]}")
        f = Settings.model_fields.get(name)
        if f is None or f.annotation not in (int, float):
            try:
                sweep_value(name, 0)  # its own words: not a setting (nearest names) or not a numeric one
            except ValueError as e:
                raise SearchError(f"{option} {item!r}: {str(e).split(': ', 1)[-1]}") from None
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise SearchError(f"{option} {item!r}: LOW and HIGH must be numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise SearchError(f"{option} {item!r}: LOW and HIGH must be finite numbers")
        if lo >= hi:
            raise SearchError(f"{option} {item!r}: the low {lo:g} is not below the high {hi:g} of {name}")
        log, integer = "log" in flags, "int" in flags or f.annotation is int
        if log and lo <= 0:
            raise SearchError(f"{option} {item!r}: a log range of {name} must stay above zero (the low is {lo:g})")
        if integer and not (lo.is_integer() and hi.is_integer()):
            raise SearchError(f"{option} {item!r}: {name} takes whole numbers: give a whole LOW and HIGH")
        for end in (lo, hi):
            try:  # the setting's own rule: its bounds (and its type) must accept both ends
                sweep_value(name, int(end) if integer and f.annotation is int else end)
            except ValueError as e:
                raise SearchError(f"{option} {item!r}: the setting {name} refuses {end:g}: "
                                  f"{str(e).split(': ', 1)[-1]}") from None
        if name in space:
            raise SearchError(f"{option} {item!r}: {name} is already searched")
        space[name] = Dim(name, lo, hi, log, integer)
    return space


def check_metric(metric: str, sessions: int, option: str = "--metric") -> str:
    """The figure a search maximises (minimises for drawdowns and rates of bad events): any of the sweep row's
    figures; an annualised one needs ``MIN_ANNUALISED_SESSIONS`` sessions, or no trial would have a value."""
    if metric not in metric_names():
        raise SearchError(f"{option} {metric!r}: unknown figure: one of {', '.join(metric_names())}")
    if metric in ANNUALISED and sessions < MIN_ANNUALISED_SESSIONS:
        raise SearchError(f"{option} {metric}: annualised, it needs at least {MIN_ANNUALISED_SESSIONS} sessions and "
                          f"the range has {sessions}: search by total_return, or take a longer range")
    return metric


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


# ---------------------------------------------------------------- the study
def storage_url(db_path: str) -> str:
    """Optuna's RDB storage in the app's SQLite database (its tables sit beside the app's, prefixed by nothing:
    studies, trials, trial_params, ...; none of them is a table of the app)."""
    if db_path in ("", ":memory:"):
        raise SearchError("a search is stored in the app's database: DB_PATH must be a file, not :memory:")
    return f"sqlite:///{db_path}"


def _storage(db_path: str) -> Any:
    import optuna

    # the app writes to the same file: wait for its lock rather than fail at once
    return optuna.storages.RDBStorage(storage_url(db_path), engine_kwargs={"connect_args": {"timeout": 30}})


def study_config(base: dict[str, Any], space: dict[str, Dim], metric: str, *, seed: int, sessions: Sequence[date],
                 source: dict[str, Any] | None = None) -> dict[str, Any]:
    """What makes a study the same study: its space, figure, settings (without secrets), seed and range."""
    secrets = secret_fields()
    return {"space": [d.text() for d in space.values()], "metric": metric,
            "base": {k: str(v) for k, v in sorted(base.items()) if k not in secrets and k != "db_path"},
            "seed": seed, "first": sessions[0].isoformat(), "last": sessions[-1].isoformat(),
            "sessions": len(sessions), "source": {k: v for k, v in (source or {}).items() if k != "label"}}


def default_study_name(config: dict[str, Any]) -> str:
    """``search-<12 hex>`` of the config: the same search asked again continues the same study."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"search-{digest}"


def open_study(db_path: str, name: str, config: dict[str, Any], seed: int) -> Any:
    """The study ``name`` in the app's database, made if new; a study of that name made for another search (space,
    figure, data or settings) is refused, naming what differs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would drown the progress
    storage = _storage(db_path)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction=direction(config["metric"]))
    had = study.user_attrs.get(CONFIG)
    if had is None:
        study.set_user_attr(CONFIG, config)
    elif had != config:
        differ = [k for k in config if had.get(k) != config[k]]
        raise SearchError(f"study {name!r} was made for another search (its {', '.join(differ)} differ): continue "
                          f"it with the same inputs, or give a new study name")
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=STARTUP_TRIALS)
    study.pruner = optuna.pruners.PercentilePruner(PRUNE_PERCENTILE, n_startup_trials=PRUNE_STARTUP)
    return study


def list_studies(db_path: str) -> list[dict[str, Any]]:
    """The searches kept in the app's database: name, trials finished, best value (none before the first)."""
    import optuna

    try:
        summaries = optuna.study.get_all_study_summaries(_storage(db_path), include_best_trial=False)
    except Exception:  # noqa: BLE001 - a database without Optuna's tables yet has no study
        return []
    return [{"name": s.study_name, "trials": s.n_trials} for s in summaries]


# ---------------------------------------------------------------- progress
@dataclass
class SearchProgress:
    """What a search's progress callback is told: trials done (finished or pruned) of this run's ``total``, the
    study's best figure and settings so far (None before the first finished trial)."""

    done: int
    total: int
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    metric: str = "total_return"
    clock: Any = None

    def text(self) -> str:
        from core.research.replay import SweepClock

        clock = self.clock or SweepClock()
        head = clock.text(self.done, self.total, "trials")
        if self.best_value is None:
            return f"{head}; no finished trial yet"
        where = ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items())
        return f"{head}; best {self.metric} {_short(self.best_value)} ({where})"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- the search
def _value(row: dict[str, Any] | None, metric: str) -> float | None:
    v = None if row is None else row.get(metric)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _cell(dims: dict[str, Dim], params: dict[str, Any]) -> dict[str, Any]:
    # an int setting gets an int (cooldown=60, not 60.0), as a sweep's typed grid does
    return {n: int(params[n]) if d.integer else float(params[n]) for n, d in dims.items()}


def run_search(base: dict[str, Any], space: dict[str, Dim], *, n_trials: int, metric: str,
               sessions: Sequence[date], seed: int, db_path: str, study_name: str | None = None,
               market: Any = None, source: dict[str, Any] | None = None, batch: int = DEFAULT_BATCH,
               workers: int = 2, cluster: str | None = None, prune: bool = True,
               progress: Callable[[SearchProgress], bool | None] | None = None,
               connect_timeout_s: float | None = None) -> dict[str, Any]:
    """Add ``n_trials`` trials to the study (made or continued; see the module docstring) over ``sessions`` and
    return the whole study as a dict: ``study``, ``metric``, ``direction``, ``trials`` (one dict per trial of the
    study: number, state, params, value, and the sweep row of a finished one), ``best`` (number, params, value),
    ``odds`` (``overfitting.odds`` of the finished trials: PBO, deflated Sharpe, verdict), ``importances``,
    ``ran`` (trials added now), ``cancelled`` and ``where``. ``progress(SearchProgress)`` is called when a trial
    ends and at least every heartbeat; False cancels."""
    from core.research.replay import SweepClock, run_cell_list, shared_feed

    if not 1 <= n_trials <= MAX_TRIALS:
        raise SearchError(f"--search {n_trials}: between 1 and {MAX_TRIALS:,} trials")
    if batch < 1:
        raise SearchError(f"a batch has at least one trial, not {batch}")
    sessions = list(sessions)
    check_metric(metric, len(sessions))
    try:
        settings = load_settings(**base)
    except ConfigError as e:
        raise SearchError(str(e)) from None
    config = study_config(base, space, metric, seed=seed, sessions=sessions, source=source)
    name = study_name or default_study_name(config)
    study = open_study(db_path, name, config, seed)
    dists = {n: d.distribution() for n, d in space.items()}
    start, end = sessions[0], sessions[-1]
    cut = max(1, round(len(sessions) * PRUNE_SHARE))
    pruning = prune and cut < len(sessions)
    first_part = sessions[:cut]
    feeds: dict[str, Any] = {}  # scored once for every batch (here; a cluster worker keeps its own)

    def feed_of(part: str) -> Any:
        if cluster:
            return None
        if part not in feeds:
            last = first_part[-1] if part == "first" else end
            feeds[part] = shared_feed(settings, seed=seed, start=start, end=last, market=market)
        return feeds[part]

    clock = SweepClock()
    done = 0
    where = ""
    cancelled = False
    lower = direction(metric) == "minimize"

    def tell_progress(extra: int = 0) -> bool:
        """``extra``: trials of the running batch finished but not counted yet."""
        if progress is None:
            return True
        best = _best(study, metric)
        p = SearchProgress(min(done + extra, n_trials), n_trials, None if best is None else float(best.value),
                           {} if best is None else dict(best.params), metric, clock)
        return progress(p) is not False

    open_trials: list[Any] = []
    # one set of worker processes for every batch (and both halves of each): spawning two new ones each time cost
    # seconds of imports and kernel loading per batch
    pool = WorkerPool(workers) if not cluster and workers > 1 else None
    try:
        while done < n_trials and not cancelled:
            asked = [study.ask(dists) for _ in range(min(batch, n_trials - done))]
            open_trials = list(asked)
            cells = [_cell(space, t.params) for t in asked]
            survivors = list(range(len(asked)))
            if pruning:
                rows = run_cell_list(base, cells, seed=seed, start=start, end=first_part[-1], market=market,
                                     workers=workers, cluster=cluster, feed=feed_of("first"),
                                     connect_timeout_s=connect_timeout_s, pool=pool,
                                     progress=lambda _d, _t: tell_progress())
                where = rows.where
                _tell_refused(study, asked, cells, rows.refused)
                if rows.cancelled:
                    cancelled = True
                    break
                part_rows = dict(zip(rows.index, rows, strict=True))
                survivors = []
                for i in sorted(part_rows):
                    v = _value(part_rows[i], metric)
                    if v is not None:
                        asked[i].report(v, step=cut)
                        if asked[i].should_prune():
                            asked[i].set_user_attr(ROW, {**cells[i], "pruned_after_sessions": cut})
                            study.tell(asked[i], state=_state("PRUNED"))
                            open_trials.remove(asked[i])
                            done += 1
                            continue
                    survivors.append(i)
            if survivors:
                todo = [cells[i] for i in survivors]
                rows = run_cell_list(base, todo, seed=seed, start=start, end=end, market=market, workers=workers,
                                     cluster=cluster, feed=feed_of("all"), connect_timeout_s=connect_timeout_s,
                                     pool=pool,
                                     progress=lambda d, _t: tell_progress(d))
                where = rows.where
                if not pruning:
                    _tell_refused(study, asked, cells, rows.refused)
                for k, row, rets in zip(rows.index, rows, rows.returns, strict=True):
                    t = asked[survivors[k]]
                    t.set_user_attr(ROW, row)
                    t.set_user_attr(RETURNS, [float(x) for x in rets])
                    v = _value(row, metric)
                    if v is None:  # ran, but without this figure (e.g. no trade, no profit factor)
                        t.set_user_attr(NO_VALUE, True)
                        study.tell(t, state=_state("FAIL"))
                    else:
                        study.tell(t, v)
                    open_trials.remove(t)
                    done += 1
                if rows.cancelled:
                    cancelled = True
                    break
            done += sum(1 for t in asked if t in open_trials and t.user_attrs.get(REFUSED))
            open_trials = [t for t in open_trials if not t.user_attrs.get(REFUSED)]
            if not tell_progress():
                cancelled = True
    finally:
        if pool is not None:
            pool.close()
        for t in open_trials:  # asked, never finished: failed, so a resumed study neither counts nor reruns them
            if not t.user_attrs.get(REFUSED):
                study.tell(t, state=_state("FAIL"))
    out = study_summary(study)
    out.update(ran=done, cancelled=cancelled, where=where or ("on the Dask cluster" if cluster else "here"),
               lower_is_better=lower)
    return out


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return getattr(TrialState, name)


def _tell_refused(study: Any, asked: list[Any], cells: list[dict[str, Any]], refused: list[dict[str, Any]]) -> None:
    """Trials whose settings a rule between settings refuses (RISK_PER_TRADE above MAX_CONCURRENT_RISK): failed
    with the rule's words, never run."""
    for r in refused:
        cell = {k: v for k, v in r.items() if k != "refused"}
        for t, c in zip(asked, cells, strict=True):
            if c == cell and not t.user_attrs.get(REFUSED):
                t.set_user_attr(REFUSED, r["refused"])
                study.tell(t, state=_state("FAIL"))
                break


def _best(study: Any, metric: str) -> Any:
    """The finished trial with the best value (the first of equals), or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    if direction(metric) == "minimize":
        return min(done, key=lambda t: (t.value, t.number))
    return max(done, key=lambda t: (t.value, -t.number))


# ---------------------------------------------------------------- what a study holds
def load_study(db_path: str, name: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=_storage(db_path))
    except KeyError:
        raise SearchError(f"no search study named {name!r} in {db_path}") from None


def study_summary(study: Any) -> dict[str, Any]:
    """A study as plain data (JSON-ready): its trials, best, odds and each parameter's importance."""
    from optuna.trial import TrialState

    config = study.user_attrs.get(CONFIG) or {}
    metric = config.get("metric", "total_return")
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                       "value": t.value, "row": t.user_attrs.get(ROW), "refused": t.user_attrs.get(REFUSED),
                       "no_value": bool(t.user_attrs.get(NO_VALUE))})
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get(RETURNS)]
    best = _best(study, metric)
    tried = sum(1 for t in trials if t["state"] in ("complete", "pruned") or t["no_value"])
    odds_d: dict[str, Any] = {}
    if best is not None and best in complete:
        matrix = np.array([t.user_attrs[RETURNS] for t in complete], dtype=float).T
        odds_d = overfitting.odds(matrix, complete.index(best), n_trials=tried).as_dict()
    return {"study": study.study_name, "metric": metric, "direction": direction(metric), "config": config,
            "trials": trials, "tried": tried,
            "best": None if best is None else {"number": best.number, "params": dict(best.params),
                                               "value": float(best.value), "row": best.user_attrs.get(ROW)},
            "odds": odds_d, "importances": importances(study)}


def importances(study: Any) -> dict[str, float]:
    """Each parameter's importance (Optuna's default fANOVA evaluator), needing a few finished trials whose value
    varies; {} before that. One parameter: it is all there is (1.0)."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = list(dict.fromkeys(n for t in done for n in t.params))
    if len(names) == 1 and done:
        return {names[0]: 1.0}
    if len(done) < 4 or len({t.value for t in done}) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # too few distinct values of a parameter to fit the forest
        return {}


def sweep_odds(rows: Sequence[dict[str, Any]], returns: Sequence[Sequence[float]], metric: str = "total_return",
               ) -> dict[str, Any]:
    """``overfitting.odds`` of a sweep's cells, the chosen one the best by ``metric`` (the first of equals; as the
    walk-forward chooses). {} when no cell has the figure or no cell ran."""
    from core.research.walkforward import best_cell

    if not rows or not returns or any(len(r) != len(returns[0]) for r in returns):
        return {}
    best = best_cell(rows, metric)
    if best is None:
        return {}
    chosen = next(i for i, r in enumerate(rows) if r is best)
    return {**overfitting.odds(np.array(returns, dtype=float).T, chosen).as_dict(), "metric": metric,
            "chosen": chosen}
