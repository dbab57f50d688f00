"""Searches with Optuna (core.research.search, ``python -m core.research --search N --space ...``): the known best
setting is found, a cancelled study resumes without rerunning anything, bad ranges are refused naming the setting,
and a sweep reports the odds that its best cell is luck."""

from __future__ import annotations

import json
from datetime import date

import pytest

import core.research.replay as replay_mod
from core.clock import trading_sessions
from core.research import runs, search
from core.research.__main__ import main
from core.state.store import Store
from tests.fakes.one_cutoff import BEST_BAND, EQUAL_CUTOFFS

TODAY = date(2026, 6, 1)  # the CLI's "today" is fixed: ranges are checked against it, not the wall clock
DAY = date(2025, 3, 3)
STRATEGY = "tests.fakes.one_cutoff:OneGoodCutoff"
BASE = {"strategy": STRATEGY, "auto_mode": True, **EQUAL_CUTOFFS}
EQUAL_SET = [x for k, v in EQUAL_CUTOFFS.items() for x in ("--set", f"{k}={v}")]


def in_band(v: float) -> bool:
    return BEST_BAND[0] < v <= BEST_BAND[1]


# ---------------------------------------------------------------- bad input: refused before anything runs
@pytest.mark.parametrize(("space", "words"), [
    ("cutof_delta=-0.1:0.1", "cutof_delta"),  # unknown: named, with the nearest real name
    ("cutoff_delta=0.2:-0.1", "the low 0.2 is not below the high -0.1 of cutoff_delta"),
    ("risk_per_trade=-0.01:0.02:log", "a log range of risk_per_trade must stay above zero"),
    ("cutoff_delta=-0.9:0.1", "the setting cutoff_delta refuses -0.9"),  # its bounds are ±0.50 (core/bounds.py)
    ("stop_loss_pct=0:0.05", "the setting stop_loss_pct refuses 0"),  # it must be above 0
    ("mixer_cooldown_s=10.5:600", "mixer_cooldown_s takes whole numbers"),
    ("seed=1:9", "seed cannot be searched"),
    ("cutoff_delta=-0.1:0.1:cubic", "expected NAME=LOW:HIGH"),
    ("tier_a_tickers=1:2", "tier_a_tickers"),  # not numeric
])
def test_bad_space_is_refused_naming_the_setting(tmp_path, monkeypatch, capsys, space, words):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    ran = []
    monkeypatch.setattr(replay_mod, "shared_feed", lambda *a, **k: ran.append(1))
    assert main(["--days", "2", "--search", "4", "--space", space], today=TODAY) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --space") and words in err, err
    assert not ran and not (tmp_path / "app.db").exists()  # nothing ran, no study was made


def test_option_mistakes_are_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        main(["--search", "4"], today=TODAY)
    assert "--search needs --space" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--space", "cutoff_delta=-0.1:0.1"], today=TODAY)
    assert "--space is for --search" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--search", "4", "--space", "cutoff_delta=-0.1:0.1", "--sweep", "cooldown=60,120"], today=TODAY)
    assert "use one" in capsys.readouterr().err


def test_an_annualised_figure_on_a_short_range_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    assert main(["--days", "3", "--search", "4", "--space", "cutoff_delta=-0.1:0.1", "--metric", "sharpe"],
                today=TODAY) == 2
    assert "--metric sharpe: annualised, it needs at least 20 sessions and the range has 3" in capsys.readouterr().err


def test_a_study_made_for_another_search_is_not_continued(tmp_path):
    sessions = trading_sessions(DAY, 2)
    space = search.parse_space(["cutoff_delta=-0.1:0.1"])
    config = search.study_config(BASE, space, "total_return", seed=7, sessions=sessions)
    search.open_study(str(tmp_path / "app.db"), "mine", config, 7)
    other = search.study_config(BASE, search.parse_space(["cutoff_delta=-0.2:0.1"]), "total_return", seed=7,
                                sessions=sessions)
    with pytest.raises(search.SearchError, match="'mine' was made for another search \\(its space differ"):
        search.open_study(str(tmp_path / "app.db"), "mine", other, 7)


# ---------------------------------------------------------------- the known best
def test_a_search_finds_the_one_good_cutoff(tmp_path, monkeypatch, capsys):
    """OneGoodCutoff trades well only with a cutoff delta in (0.15, 0.30] (tests/fakes/one_cutoff.py; a grid of
    0.05 steps shows the plateau). 12 trials on seed 7 find it, and the study is kept in the app's database."""
    db = tmp_path / "app.db"
    monkeypatch.setenv("DB_PATH", str(db))
    args = ["--start", DAY.isoformat(), "--days", "3", "--seed", "7", "--strategy", STRATEGY, *EQUAL_SET,
            "--search", "12", "--space", "cutoff_delta=-0.2:0.45", "--workers", "1", "--save", "found"]
    assert main(args, today=TODAY) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["ran"] == 12 and out["tried"] == 12 and not out["cancelled"]
    assert in_band(out["best"]["params"]["cutoff_delta"]), out["best"]
    assert out["best"]["value"] == pytest.approx(0.032191, abs=1e-6)  # the band's return (the grid's figure)
    inside = [t for t in out["trials"] if t["state"] == "complete" and in_band(t["params"]["cutoff_delta"])]
    outside = [t for t in out["trials"] if t["state"] == "complete" and not in_band(t["params"]["cutoff_delta"])]
    assert inside and outside and max(t["value"] for t in outside) < out["best"]["value"]
    assert "12/12 trials" in cap.err and "best total_return 0.03219" in cap.err
    assert out["odds"]["why_no_pbo"].startswith("PBO needs at least 4 sessions")  # 3 sessions: said, not faked
    study = search.load_study(str(db), out["study"])
    assert len(study.trials) == 12  # in the app's database, under the name printed
    store = Store(str(db), readonly=True)
    try:
        [run] = [runs.load_run(store, int(i)) for i in runs.list_runs(store)["id"]]
    finally:
        store.close()
    assert run["kind"] == "search" and run["detail"]["study"] == out["study"]
    assert run["metrics"]["total_return"] == out["best"]["value"]


# ---------------------------------------------------------------- cancel and resume
def test_a_cancelled_search_resumes_the_same_study_and_reruns_nothing(tmp_path, monkeypatch):
    db = str(tmp_path / "app.db")
    sessions = trading_sessions(DAY, 2)
    space = search.parse_space(["cutoff_delta=-0.2:0.45"])
    replays: list[float] = []
    real = replay_mod.replay_cell

    def counted(settings, cell, **kw):  # type: ignore[no-untyped-def]
        replays.append(cell["cutoff_delta"])
        return real(settings, cell, **kw)

    monkeypatch.setattr(replay_mod, "replay_cell", counted)
    kw = dict(metric="total_return", sessions=sessions, seed=7, db_path=db, study_name="resumable", batch=3,
              workers=1, prune=False)
    first = search.run_search(BASE, space, n_trials=9, progress=lambda p: p.done < 4, **kw)
    # cancelled in the second batch, after its first trial: 4 finished, the batch's other 2 failed (never counted)
    assert first["cancelled"] and first["ran"] == 4
    states = [t["state"] for t in first["trials"]]
    assert states.count("complete") == 4 and states.count("fail") == 2, states
    before = {t["number"]: t["params"] for t in first["trials"] if t["state"] == "complete"}
    replays.clear()
    second = search.run_search(BASE, space, n_trials=3, **kw)
    assert second["ran"] == 3 and not second["cancelled"]
    done = [t for t in second["trials"] if t["state"] == "complete"]
    assert len(done) == 4 + 3 == second["tried"]
    assert {t["number"]: t["params"] for t in done if t["number"] in before} == before  # kept as they were
    new = [t["params"]["cutoff_delta"] for t in done if t["number"] not in before]
    assert sorted(replays) == sorted(new) and len(replays) == 3  # only the new trials were replayed
    assert not set(new) & {p["cutoff_delta"] for p in before.values()}


# ---------------------------------------------------------------- the odds of a sweep
def test_a_sweep_reports_its_odds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    assert main(["--start", DAY.isoformat(), "--days", "4", "--auto", "--strategy", STRATEGY, *EQUAL_SET,
                 "--sweep", "cutoff_delta=0.0,0.2,0.4", "--workers", "1", "--save", "odds"], today=TODAY) == 0
    out = json.loads(capsys.readouterr().out)
    odds = out["overfitting"]
    assert odds["blocks"] == 4 and odds["trials"] == 3 and odds["sessions"] == 4
    assert out["grid"][odds["chosen"]]["cutoff_delta"] == 0.2  # the best cell by total_return
    assert 0.0 <= odds["pbo"] <= 1.0 and len(odds["logits"]) == 6
    assert odds["verdict"].startswith(f"PBO {odds['pbo']:.2f}: ")
    assert odds["dsr"] is None and "20 sessions" in odds["why_no_dsr"]  # 4 sessions: no deflated Sharpe
