import pytest

from core.bounds import BOUNDS
from core.config import ConfigError, LiveParams, apply_profile, load_settings, validate_param_changes


def test_defaults_are_the_spec_numbers():
    s = load_settings()
    assert (s.risk_per_trade, s.max_concurrent_risk, s.daily_loss_limit) == (0.005, 0.02, 0.02)
    assert (s.max_positions, s.stop_loss_pct, s.max_exposure, s.min_slots) == (4, 0.015, 0.8, 3)
    assert (s.tier_a_tokens, s.tier_b_tokens, s.reserve_tokens, s.rth_daily_cap) == (6, 3, 1, 100)
    assert (s.mixer_cooldown_s, s.direction_lock_s, s.etf_lock_s) == (180, 90, 90)
    assert (s.basket_neg_ratio, s.basket_mean_score, s.basket_consecutive_ticks) == (0.6, -0.12, 2)
    assert (s.llm_min_signal_score, s.llm_daily_limit, s.llm_cache_min) == (0.7, 120, 30)
    assert s.auto_mode is False
    assert (s.sim_slippage_bps, s.sim_fee_per_order, s.sim_fee_per_share) == (2.0, 0.0, 0.0)
    assert s.universe.get_ticker_tier("NVDA") == "A" and s.universe.get_ticker_tier("META") == "B"
    assert s.universe.get_ticker_tier("AVGO") == "Bench" and s.universe.get_ticker_tier("SQQQ") is None


def test_inline_comment_in_env_is_refused_with_name_and_value(monkeypatch):
    monkeypatch.setenv("TIER_A_TOKENS", "6  # Tier A")
    with pytest.raises(ConfigError) as e:
        load_settings()
    msg = str(e.value)
    assert "TIER_A_TOKENS" in msg and "'6  # Tier A'" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("name", "value"),
    [("RISK_PER_TRADE", "-0.01"), ("RISK_PER_TRADE", "1.5"), ("MAX_POSITIONS", "four"), ("AUTO_MODE", "maybe"),
     ("STOP_LOSS_PCT", "0"), ("BASKETS_JSON", "[{"), ("TIER_B_TICKERS", "MSFT,NVDA"), ("SIM_START", "2025-02-30"),
     ("SIM_START", "1990-01-02"), ("SIM_START", "2036-01-02"), ("SIM_START", "next monday"),
     ("SIM_FEE_PER_SHARE", "-0.01"), ("SIM_FEE_PER_SHARE", "0.005  # IBKR"), ("SIM_FEE_PER_SHARE", "101"),
     ("SIM_FEE_PER_SHARE", "nan")],
)
def test_bad_values_fail_at_start_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value).startswith(name) or name in str(e.value)
    assert repr(value) in str(e.value) or name == "TIER_B_TICKERS"


def test_secrets_are_masked_in_errors_and_redacted_dumps(monkeypatch):
    monkeypatch.setenv("ALPACA_API_KEY", "CANARY-SECRET-123")
    s = load_settings()
    assert "CANARY-SECRET-123" not in repr(s) and "CANARY-SECRET-123" not in str(s.redacted())
    assert s.alpaca_api_key.get_secret_value() == "CANARY-SECRET-123"


def test_live_param_changes_are_range_checked():
    assert validate_param_changes({"cutoff_delta": "-0.03", "cooldown_s": "120"}) == {
        "cutoff_delta": -0.03, "cooldown_s": 120}
    # just past each end of the one table (core/bounds.py), unknown names and non-booleans
    past = [{b.param: b.hi + b.step} for b in BOUNDS] + [{b.param: b.lo - b.step} for b in BOUNDS]
    for bad in (*past, {"cutoff_delta": float("nan")}, {"nope": 1}, {"paused": "perhaps"}):
        with pytest.raises(ConfigError):
            validate_param_changes(bad)


def test_relaxed_profile_numbers():
    p = apply_profile(LiveParams.from_settings(load_settings()), "relaxed", 2)
    assert (p.cutoff_delta, p.cooldown_s, p.llm_min_signal_score, p.reserve_fallback) == (-0.03, 120, 0.6, True)
    assert p.profile_sessions_left == 2
    with pytest.raises(ConfigError):
        apply_profile(p, "yolo")


# ---------------------------------------------------------------- clear words for bad input (issue 17, part 6)
@pytest.mark.parametrize(("line", "shown"), [('TIER_A_TOKENS="6 # six"', "'6 # six'"),
                                             ("TIER_A_TOKENS='7 # seven'", "'7 # seven'"),
                                             ("TIER_A_TOKENS=8#eight", "'8#eight'")])
def test_an_inline_comment_in_dotenv_shows_the_value_as_written(tmp_path, monkeypatch, line, shown):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIER_A_TOKENS", raising=False)
    (tmp_path / ".env").write_text(line + "\n")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value) == f"TIER_A_TOKENS={shown}: inline comment ('#') in the value"


def test_a_clean_dotenv_value_is_taken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIER_A_TOKENS", raising=False)
    (tmp_path / ".env").write_text("TIER_A_TOKENS=7\n")
    assert load_settings().tier_a_tokens == 7


def test_the_environment_wins_over_dotenv_in_the_message_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TIER_A_TOKENS=7\n")
    monkeypatch.setenv("TIER_A_TOKENS", "5 # five")
    with pytest.raises(ConfigError, match=r"^TIER_A_TOKENS='5 # five': inline comment"):
        load_settings()


@pytest.mark.parametrize(("env", "message"), [
    ({"RISK_PER_TRADE": "1"}, "RISK_PER_TRADE=1 is above MAX_CONCURRENT_RISK=0.02: "),
    ({"RISK_PER_TRADE": "0.0201"}, "RISK_PER_TRADE=0.0201 is above MAX_CONCURRENT_RISK=0.02: "),
    ({"MAX_CONCURRENT_RISK": "0.001"}, "MAX_CONCURRENT_RISK=0.001 is below RISK_PER_TRADE=0.005: "),
    ({"MAX_CONCURRENT_RISK": "0.004", "RISK_PER_TRADE": "0.01"},
     "RISK_PER_TRADE=0.01 is above MAX_CONCURRENT_RISK=0.004: "),
])
def test_risk_per_trade_above_the_concurrent_cap_names_what_was_changed(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value).startswith(message) and str(e.value).count(":") == 1


@pytest.mark.parametrize("env", [{"RISK_PER_TRADE": "0.02"}, {"MAX_CONCURRENT_RISK": "0.005"},
                                 {"RISK_PER_TRADE": "0.0199"}])
def test_risk_per_trade_up_to_the_concurrent_cap_is_accepted(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.risk_per_trade <= s.max_concurrent_risk


@pytest.mark.parametrize("bars_file", [None, "", "   "])
def test_replay_without_a_bar_file_is_refused_naming_both_variables(monkeypatch, bars_file):
    monkeypatch.setenv("MARKET_DATA", "replay")
    if bars_file is None:
        monkeypatch.delenv("BARS_FILE", raising=False)
    else:
        monkeypatch.setenv("BARS_FILE", bars_file)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value).startswith("MARKET_DATA=replay needs BARS_FILE") and "BARS_FILE is not set" in str(e.value)


def test_replay_with_a_bar_file_and_other_sources_without_one_are_accepted(monkeypatch):
    monkeypatch.setenv("MARKET_DATA", "replay")
    monkeypatch.setenv("BARS_FILE", "data/bars.csv")
    assert load_settings().bars_file == "data/bars.csv"
    monkeypatch.delenv("BARS_FILE")
    monkeypatch.setenv("MARKET_DATA", "synthetic")
    assert load_settings().bars_file is None


def test_a_per_share_fee_is_taken(monkeypatch):
    monkeypatch.setenv("SIM_FEE_PER_SHARE", "0.005")
    assert load_settings().sim_fee_per_share == 0.005
