"""Every number the rules read, flattened into one float64 vector, in one place.

The engine builds the vector from its ``Settings`` and live parameters (``param_vector``) each time a live parameter
changes and hands the rules the entries they need; a compiled research kernel takes the same vector. Indexes are
module constants (``P_CUTOFF_OPEN`` …), so a rule's caller reads ``p[P_X]`` and nothing else knows the layout.
Booleans are 0.0 / 1.0; seconds and counts are whole numbers stored as floats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core.config import LiveParams, Settings

# (name in the vector, where it comes from: "live" = LiveParams, else the Settings field of that name)
FIELDS: tuple[tuple[str, str], ...] = (
    # dynamic cutoff (rules §4)
    ("cutoff_open", "cutoff_open"),
    ("cutoff_midday", "cutoff_midday"),
    ("cutoff_close", "cutoff_close"),
    ("cutoff_segment_min", "cutoff_segment_min"),
    ("cutoff_high_vol_spike", "cutoff_high_vol_spike"),
    ("cutoff_high_vol_add", "cutoff_high_vol_add"),
    ("cutoff_delta", "live"),
    # gates (rules §4)
    ("cooldown_s", "live"),
    ("direction_lock_s", "live"),
    ("rth_daily_cap", "rth_daily_cap"),
    ("tier_a_daily_cap", "tier_a_daily_cap"),
    ("tier_b_daily_cap", "tier_b_daily_cap"),
    ("bench_daily_cap", "bench_daily_cap"),
    ("cap_idempotency_s", "cap_idempotency_s"),
    ("protection_symbol_cooldown_s", "protection_symbol_cooldown_s"),
    ("paused", "live"),
    # token buckets (rules §5)
    ("tier_a_tokens", "tier_a_tokens"),
    ("tier_b_tokens", "tier_b_tokens"),
    ("reserve_tokens", "reserve_tokens"),
    ("reserve_borrow_window_s", "reserve_borrow_window_s"),
    ("reserve_fallback", "live"),
    # risk (rules §7)
    ("risk_per_trade", "risk_per_trade"),
    ("max_concurrent_risk", "max_concurrent_risk"),
    ("daily_loss_limit", "daily_loss_limit"),
    ("max_positions", "max_positions"),
    ("stop_loss_pct", "stop_loss_pct"),
    ("take_profit_pct", "take_profit_pct"),
    ("max_exposure", "max_exposure"),
    ("min_slots", "min_slots"),
    ("min_position_fraction", "min_position_fraction"),
    # baskets (rules §8)
    ("basket_min_signals", "basket_min_signals"),
    ("basket_neg_ratio", "basket_neg_ratio"),
    ("basket_mean_score", "basket_mean_score"),
    ("basket_consecutive_ticks", "basket_consecutive_ticks"),
    ("basket_signal_max_age_s", "basket_signal_max_age_s"),
    ("basket_streak_gap_s", "basket_streak_gap_s"),
    ("etf_lock_s", "etf_lock_s"),
    # execution and the simulated broker (rules §9)
    ("intent_ttl_s", "intent_ttl_s"),
    ("auto_mode", "live"),
    ("sim_slippage_bps", "sim_slippage_bps"),
    ("sim_fee_per_order", "sim_fee_per_order"),
    # LLM and events (rules §6)
    ("llm_min_signal_score", "live"),
    ("vol_spike_event", "vol_spike_event"),
    ("llm_mix_weight", "llm_mix_weight"),
)

NAMES: tuple[str, ...] = tuple(n for n, _ in FIELDS)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
N_PARAMS = len(NAMES)

# the indexes, spelled out so a reader (and numba, which freezes module globals) sees plain ints
P_CUTOFF_OPEN = INDEX["cutoff_open"]
P_CUTOFF_MIDDAY = INDEX["cutoff_midday"]
P_CUTOFF_CLOSE = INDEX["cutoff_close"]
P_CUTOFF_SEGMENT_MIN = INDEX["cutoff_segment_min"]
P_CUTOFF_HIGH_VOL_SPIKE = INDEX["cutoff_high_vol_spike"]
P_CUTOFF_HIGH_VOL_ADD = INDEX["cutoff_high_vol_add"]
P_CUTOFF_DELTA = INDEX["cutoff_delta"]
P_COOLDOWN_S = INDEX["cooldown_s"]
P_DIRECTION_LOCK_S = INDEX["direction_lock_s"]
P_RTH_DAILY_CAP = INDEX["rth_daily_cap"]
P_TIER_A_DAILY_CAP = INDEX["tier_a_daily_cap"]
P_TIER_B_DAILY_CAP = INDEX["tier_b_daily_cap"]
P_BENCH_DAILY_CAP = INDEX["bench_daily_cap"]
P_CAP_IDEMPOTENCY_S = INDEX["cap_idempotency_s"]
P_SYMBOL_COOLDOWN_S = INDEX["protection_symbol_cooldown_s"]
P_PAUSED = INDEX["paused"]
P_TIER_A_TOKENS = INDEX["tier_a_tokens"]
P_TIER_B_TOKENS = INDEX["tier_b_tokens"]
P_RESERVE_TOKENS = INDEX["reserve_tokens"]
P_RESERVE_BORROW_WINDOW_S = INDEX["reserve_borrow_window_s"]
P_RESERVE_FALLBACK = INDEX["reserve_fallback"]
P_RISK_PER_TRADE = INDEX["risk_per_trade"]
P_MAX_CONCURRENT_RISK = INDEX["max_concurrent_risk"]
P_DAILY_LOSS_LIMIT = INDEX["daily_loss_limit"]
P_MAX_POSITIONS = INDEX["max_positions"]
P_STOP_LOSS_PCT = INDEX["stop_loss_pct"]
P_TAKE_PROFIT_PCT = INDEX["take_profit_pct"]
P_MAX_EXPOSURE = INDEX["max_exposure"]
P_MIN_SLOTS = INDEX["min_slots"]
P_MIN_POSITION_FRACTION = INDEX["min_position_fraction"]
P_BASKET_MIN_SIGNALS = INDEX["basket_min_signals"]
P_BASKET_NEG_RATIO = INDEX["basket_neg_ratio"]
P_BASKET_MEAN_SCORE = INDEX["basket_mean_score"]
P_BASKET_CONSECUTIVE_TICKS = INDEX["basket_consecutive_ticks"]
P_BASKET_SIGNAL_MAX_AGE_S = INDEX["basket_signal_max_age_s"]
P_BASKET_STREAK_GAP_S = INDEX["basket_streak_gap_s"]
P_ETF_LOCK_S = INDEX["etf_lock_s"]
P_INTENT_TTL_S = INDEX["intent_ttl_s"]
P_AUTO_MODE = INDEX["auto_mode"]
P_SIM_SLIPPAGE_BPS = INDEX["sim_slippage_bps"]
P_SIM_FEE_PER_ORDER = INDEX["sim_fee_per_order"]
P_LLM_MIN_SIGNAL_SCORE = INDEX["llm_min_signal_score"]
P_VOL_SPIKE_EVENT = INDEX["vol_spike_event"]
P_LLM_MIX_WEIGHT = INDEX["llm_mix_weight"]


def param_vector(settings: Settings, live: LiveParams | None = None) -> np.ndarray:
    """The rules' numbers: ``settings`` overlaid with the live parameters (the sliders, switches, profile)."""
    from core.config import LiveParams  # the vector's own module stays importable by a kernel without pydantic

    live = live or LiveParams.from_settings(settings)
    out = np.empty(N_PARAMS, dtype=np.float64)
    for i, (name, src) in enumerate(FIELDS):
        out[i] = float(getattr(live, name) if src == "live" else getattr(settings, src))
    return out
