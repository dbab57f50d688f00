"""Issue 30, uploads: a client's file name is never a server path, and nothing outside data/ is read.

An upload is kept as data/uploads/<sha256 prefix>.csv whatever the browser calls it; a file picked from data/, or
read back for a saved run, is resolved inside data/ (no "..", no absolute path, no symlink out) or refused without
being opened, so no refusal shows the file's content."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime

import pytest

from core.research import files, run_bars
from core.venues.marketdata import BarDataError
from tests.security.helpers import DAY, all_text, bars_bytes, one_session_universe, research_page, stop

SECRET = "SECRET-7f3a9c"  # the outside file's content: it must never reach the page


@pytest.fixture
def dirs(tmp_path):
    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    # a file outside data/ that a bar reader would quote back: its timestamp is the secret
    secret = outside / "secret.csv"
    secret.write_text(f"timestamp,symbol,open,high,low,close,volume\n{SECRET},AAA,1,1,1,1,1\n")
    return data, secret


def test_an_upload_named_with_an_absolute_path_is_stored_under_a_name_the_server_chose(tmp_path, monkeypatch, dirs):
    from ui import research_view

    data, secret = dirs
    monkeypatch.setattr(research_view, "DATA_DIR", data)
    body = bars_bytes(["AAA"], minutes=30)
    for client_name in (str(secret), "../../outside/secret.csv", "..\\..\\outside\\secret.csv"):
        stored, label, frame = research_view.load_upload(body, client_name)
        assert label == "secret.csv" and len(frame) == 30
        path = (data / stored).resolve()
        assert path.is_relative_to(data.resolve()) and path.parent.name == "uploads"
        assert path.read_bytes() == body and path.name != "secret.csv"
        assert ".." not in stored and not os.path.isabs(stored)
    assert secret.read_text().startswith("timestamp")  # never written to


@pytest.mark.parametrize("name", ["../secret.csv", "../outside/secret.csv", "sub/../../secret.csv",
                                  "..\\secret.csv", "ABSOLUTE", "C:\\secret.csv", "link.csv", "linked/secret.csv"])
def test_a_picked_name_leading_out_of_data_is_refused_unread(dirs, name):
    from ui import research_view

    data, secret = dirs
    (data / "link.csv").symlink_to(secret)
    (data / "linked").symlink_to(secret.parent, target_is_directory=True)
    name = str(secret) if name == "ABSOLUTE" else name
    research_view.DATA_DIR, old = data, research_view.DATA_DIR
    try:
        with pytest.raises(BarDataError) as got:
            research_view.load_path(name)
    finally:
        research_view.DATA_DIR = old
    assert isinstance(got.value, files.FileRefused), got.value
    assert SECRET not in str(got.value) and "refused" in str(got.value)
    assert "link.csv" not in research_view.files.list_data_files(data)  # not offered either


def test_a_file_inside_data_is_read_by_its_name_and_an_old_data_prefix_still_works(dirs):
    data, _ = dirs
    (data / "sub").mkdir()
    (data / "sub" / "mine.csv").write_bytes(bars_bytes(["AAA"], minutes=5))
    assert files.list_data_files(data) == ["sub/mine.csv"]
    assert files.resolve_data_file("sub/mine.csv", data) == (data / "sub" / "mine.csv").resolve()
    assert files.resolve_data_file("data/sub/mine.csv", data) == (data / "sub" / "mine.csv").resolve()


def saved_file_run(db: str, file: str) -> int:
    """A run row as an old version (or someone editing the database) wrote it: its file is any path."""
    from core.research import runs
    from core.state.store import Store

    store = Store(db)
    try:
        return runs.save_run(store, name="old run", kind="replay",
                             source={"kind": "file", "file": file, "first": DAY.isoformat(), "last": DAY.isoformat(),
                                     "sessions": 1, "fingerprint": "0123456789abcdef"},
                             params={"tier_a_tickers": "AAA", "tier_b_tickers": "", "bench_tickers": "",
                                     "baskets_json": "[]", "cutoff_delta": 0.0, "mixer_cooldown_s": 180},
                             metrics={"trades": 0}, created_at=datetime(2025, 3, 4, tzinfo=UTC))
    finally:
        store.close()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_saved_run_whose_file_is_outside_data_is_refused_unread(tmp_path, dirs, how):
    data, secret = dirs
    (data / "link.csv").symlink_to(secret)
    file = {"absolute": str(secret), "dotdot": "data/../../outside/secret.csv", "symlink": "link.csv"}[how]
    run = {"id": 1, "source": {"kind": "file", "file": file, "first": DAY.isoformat(), "last": DAY.isoformat()},
           "params": {"tier_a_tickers": "AAA", "tier_b_tickers": "", "bench_tickers": "", "baskets_json": "[]"}}
    with pytest.raises(run_bars.RunBarsUnavailable) as got:
        run_bars.load_run_bars(run, data_dir=data)
    assert "refused" in str(got.value) and SECRET not in str(got.value)


def test_an_absolute_upload_name_reopened_in_a_fresh_session_shows_nothing_of_the_outside_file(
        tmp_path, monkeypatch, dirs):
    """The review's case: a browser File named with a path outside the project, replayed and saved; a new session
    opening that run read the outside file and quoted it in an error."""
    data, secret = dirs
    at = research_page(monkeypatch, tmp_path, data)
    try:
        at.radio(key="r_source").set_value("file").run()
        at.file_uploader(key="r_upload").set_value((str(secret), bars_bytes(["AAA"]), "text/csv")).run()
        assert not at.exception, at.exception
        one_session_universe(at, "AAA")
        next(b for b in at.get("form_submit_button") if b.proto.label == "Run replay").click().run()
        assert not at.exception, at.exception
        assert any("Saved run #1" in s.value for s in at.success), [e.value for e in at.error]
    finally:
        stop()
    con = sqlite3.connect(tmp_path / "r.db")
    source = json.loads(con.execute("SELECT source FROM research_runs").fetchone()[0])
    con.close()
    assert str(secret) not in json.dumps(source) and source["file"].startswith("uploads/"), source
    assert (data / source["file"]).is_file()

    fresh = research_page(monkeypatch, tmp_path, data)  # another browser: no upload in its session
    try:
        assert fresh.multiselect(key="r_open").value == [1]  # the newest run opens
        assert not fresh.exception, fresh.exception
        assert SECRET not in all_text(fresh)
    finally:
        stop()


def test_a_tampered_run_row_opened_on_the_page_shows_nothing_of_the_outside_file(tmp_path, monkeypatch, dirs):
    data, secret = dirs
    saved_file_run(str(tmp_path / "r.db"), str(secret))
    at = research_page(monkeypatch, tmp_path, data)
    try:
        assert at.multiselect(key="r_open").value == [1]
        text = all_text(at)
        assert SECRET not in text
        assert any("No price chart" in i.value and "refused" in i.value for i in at.info), [i.value for i in at.info]
    finally:
        stop()
