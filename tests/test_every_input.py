"""Issue 27, items 1-3 ("Every input heard"): a name that is not a setting is refused naming the nearest real
ones (.env, --set, --sweep); a live parameter that differs from .env is shown with where it came from; the CLI
resolves its dates as the page does and every argument error names its option. No test reads today's date."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from core.config import ConfigError, load_settings
from core.research.__main__ import main, parse_set
from core.research.replay import parse_sweep

TODAY = date(2026, 11, 30)


def run_cli(capsys, *args: str, today: date = TODAY) -> tuple[int, str, str]:
    try:
        code = main(list(args), today=today)
    except SystemExit as e:  # argparse's own refusals
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- 1. unknown setting names
@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # .env is read from the working directory
    return tmp_path


def test_a_dotenv_key_that_is_not_a_setting_is_refused_naming_the_nearest(in_tmp):
    (in_tmp / ".env").write_text("MIXER_COOLDOWN_SECS=60\n")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value) == "MIXER_COOLDOWN_SECS in .env is not a setting; did you mean MIXER_COOLDOWN_S?"


def test_every_unknown_dotenv_key_is_listed_and_one_far_from_any_name_points_to_the_list(in_tmp):
    (in_tmp / ".env").write_text("# comment\nCUTOF_DELTA=0.05\nexport WHATEVER_THIS_IS=1\nTIER_A_TOKENS=6\n")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value) == ("CUTOF_DELTA in .env is not a setting; did you mean CUTOFF_DELTA, CUTOFF_MIDDAY or "
                            "CUTOFF_OPEN?; WHATEVER_THIS_IS in .env is not a setting (README, Configuration, lists "
                            "the settings)")


def test_names_read_from_the_environment_only_are_refused_in_dotenv_saying_where_they_belong(in_tmp):
    (in_tmp / ".env").write_text("RESEARCH_WARM_UP=0\n")
    with pytest.raises(ConfigError, match=r"^RESEARCH_WARM_UP in \.env is not read: .* process environment only"):
        load_settings()


def test_every_setting_the_project_reads_is_accepted_in_dotenv_in_any_case(in_tmp):
    (in_tmp / ".env").write_text(
        "ALPACA_API_KEY=k\nALPACA_SECRET_KEY=s\nREDIS_URL=redis://127.0.0.1:6379/0\nOPENAI_API_KEY=o\n"
        "SLACK_WEBHOOK_URL=https://hooks.slack.com/x\nDB_PATH=x.db\nAPP_PASSWORD=p\nmixer_cooldown_s=60\n"
        "EDGAR_USER_AGENT=Jane jane@example.com\nLLM_BASE_URL=http://127.0.0.1:1\nDASK_SCHEDULER=tcp://127.0.0.1:8786\n")
    s = load_settings()
    assert s.mixer_cooldown_s == 60 and s.db_path == "x.db"


def test_unknown_environment_variables_are_other_programs_business(in_tmp, monkeypatch):
    monkeypatch.setenv("MIXER_COOLDOWN_SECS", "60")  # the environment is shared: only exact names count
    assert load_settings().mixer_cooldown_s == 180


def test_set_and_sweep_take_the_same_names_and_aliases():
    assert parse_set(["cooldown=60", "DELTA=0.01", "Risk_Per_Trade=0.01"]) == {
        "mixer_cooldown_s": "60", "cutoff_delta": "0.01", "risk_per_trade": "0.01"}
    assert parse_sweep(["cooldown=60", "DELTA=0.01"]) == {"mixer_cooldown_s": [60], "cutoff_delta": [0.01]}
    with pytest.raises(ConfigError, match=r"^--set COOLDOWN_S=2: MIXER_COOLDOWN_S is already set by an earlier --set$"):
        parse_set(["cooldown=1", "COOLDOWN_S=2"])


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "COOLDOWN_SECS=60"],
     "error: --set COOLDOWN_SECS=60: COOLDOWN_SECS is not a setting; did you mean COOLDOWN_S, COOLDOWN or "
     "MIXER_COOLDOWN_S?"),
    (["--set", "cooldown_secs=60"],
     "error: --set cooldown_secs=60: cooldown_secs is not a setting; did you mean cooldown_s, cooldown or "
     "mixer_cooldown_s?"),
    (["--sweep", "cooldown_secs=60,120"],
     "error: --sweep cooldown_secs: cooldown_secs is not a setting; did you mean cooldown_s, cooldown or "
     "mixer_cooldown_s?"),
])
def test_the_cli_refuses_a_name_that_is_not_a_setting(capsys, in_tmp, args, message):
    code, out, err = run_cli(capsys, *args, "--days", "1", "--json")
    assert (code, out, err.strip()) == (2, "", message)


def test_the_cli_alias_reaches_the_setting(capsys, in_tmp):
    # cooldown is MIXER_COOLDOWN_S: its own bound refuses 5000 (before, the name was dropped and 180 s ran)
    code, out, err = run_cli(capsys, "--set", "cooldown=5000", "--days", "1", "--json")
    assert (code, out) == (2, "") and err.startswith("error: MIXER_COOLDOWN_S='5000': ")


def test_the_cli_refuses_an_unknown_dotenv_key(capsys, in_tmp):
    (in_tmp / ".env").write_text("MIXER_COOLDOWN_SECS=60\n")
    code, out, err = run_cli(capsys, "--days", "1", "--json")
    assert (code, out, err.strip()) == (
        2, "", "error: MIXER_COOLDOWN_SECS in .env is not a setting; did you mean MIXER_COOLDOWN_S?")


def test_the_app_shows_an_unknown_dotenv_key_on_its_configuration_error_page(in_tmp, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core.runtime import active_runtime, stop_all
    from tests.helpers import APP

    db = str(in_tmp / "x.db")
    monkeypatch.setenv("DB_PATH", db)
    monkeypatch.setenv("ENGINE_JOBS", "0")
    (in_tmp / ".env").write_text("MIXER_COOLDOWN_SECS=60\n")
    # Streamlit reads .streamlit/config.toml from the working directory, and keeps it for the process: the
    # repository's (bound to localhost, where the details are shown), or later tests would see another server
    shutil.copytree(Path(APP).parent / ".streamlit", in_tmp / ".streamlit")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        assert [e.value for e in at.error] == [
            "Configuration error: MIXER_COOLDOWN_SECS in .env is not a setting; did you mean MIXER_COOLDOWN_S?"]
        assert active_runtime(db) is None  # nothing started
    finally:
        st.cache_resource.clear()
        stop_all()
