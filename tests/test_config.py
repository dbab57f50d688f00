import pytest

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
     ("SIM_START", "1990-01-02"), ("SIM_START", "2036-01-02"), ("SIM_START", "next monday")],
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
    for bad in ({"cutoff_delta": 0.5}, {"cooldown_s": -1}, {"nope": 1}, {"paused": "perhaps"}):
        with pytest.raises(ConfigError):
            validate_param_changes(bad)


def test_relaxed_profile_numbers():
    p = apply_profile(LiveParams.from_settings(load_settings()), "relaxed", 2)
    assert (p.cutoff_delta, p.cooldown_s, p.llm_min_signal_score, p.reserve_fallback) == (-0.03, 120, 0.6, True)
    assert p.profile_sessions_left == 2
    with pytest.raises(ConfigError):
        apply_profile(p, "yolo")
