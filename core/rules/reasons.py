"""Why a rule said no: one int code per reason, and one table with each code's name and words.

Rules return these codes (0 = passed); only the journal and the pages turn them into text. The names are what the
decision log, the intents and the basket rows store (``reason_name``), so they never change; the words are what a
trader reads next to them. A compiled research kernel returns the same codes.
"""

from __future__ import annotations

OK = 0
MARKET_CLOSED = 1
RATE_LIMITED = 2
NO_DATA = 3
BELOW_CUTOFF = 4
MIXER_COOLDOWN = 5
DIRECTION_LOCK = 6
PAUSED = 7
PROTECTION = 8  # a protection pauses new entries: stored as ``protection:<rule>``
SYMBOL_COOLDOWN = 9
ALREADY_HELD = 10
ETF_HELD = 11
CONFLICT = 12  # stored as ``conflict:<symbols>``
INTENT_PENDING = 13
RISK_DAILY_LOSS = 14
RISK_MAX_POSITIONS = 15  # stored with the approvals that hold slots: ``risk_max_positions (2 pending approvals)``
RISK_NO_PRICE = 16
RISK_EXPOSURE = 17
RISK_BUYING_POWER = 18
RISK_SIZE_TOO_SMALL = 19
RISK_CONCURRENT = 20
RISK_SIZE_ZERO = 21
RISK_ALREADY_HELD = 22
RISK_SLOT = 23
RTH_DAILY_CAP = 24
ETF_LOCK = 25
APPROVAL_PRICE_MOVED = 26  # an approval or auto submission: the price left the signal by more than allowed
APPROVAL_STOP_CROSSED = 27  # ... or is already through the signal's stop

# code -> (name as stored, words for a trader)
REASONS: dict[int, tuple[str, str]] = {
    OK: ("ok", "passed every check"),
    MARKET_CLOSED: ("market_closed", "outside New York regular trading hours"),
    RATE_LIMITED: ("rate_limited", "no market-data token left for its tier this minute"),
    NO_DATA: ("no_data", "no completed bar to score"),
    BELOW_CUTOFF: ("below_cutoff", "|score| below the dynamic cutoff plus the cutoff delta"),
    MIXER_COOLDOWN: ("mixer_cooldown", "the ticker had an actionable signal within the cooldown"),
    DIRECTION_LOCK: ("direction_lock", "an intent of the opposite sign on the ticker within the direction lock"),
    PAUSED: ("paused", "trading is paused: no new entries"),
    PROTECTION: ("protection", "a protection pauses new entries"),
    SYMBOL_COOLDOWN: ("symbol_cooldown", "re-entry too soon after a losing exit in the symbol"),
    ALREADY_HELD: ("already_held", "the symbol is held already"),
    ETF_HELD: ("etf_held", "the inverse ETF is held already"),
    CONFLICT: ("conflict", "a conflicting holding is open (the index or its leveraged ETF)"),
    INTENT_PENDING: ("intent_pending", "an intent for the symbol is still live"),
    RISK_DAILY_LOSS: ("risk_daily_loss", "the daily loss limit is reached: entries halted until the date rolls"),
    RISK_MAX_POSITIONS: ("risk_max_positions", "every position slot is taken (open or pending)"),
    RISK_NO_PRICE: ("risk_no_price", "no price to size the entry"),
    RISK_EXPOSURE: ("risk_exposure", "no exposure left under the maximum"),
    RISK_BUYING_POWER: ("risk_buying_power", "not enough buying power"),
    RISK_SIZE_TOO_SMALL: ("risk_size_too_small", "what is left would buy less than the minimum part of a position"),
    RISK_CONCURRENT: ("risk_concurrent", "the entry would take concurrent stop risk past its maximum"),
    RISK_SIZE_ZERO: ("risk_size_zero", "the intent has no shares"),
    RISK_ALREADY_HELD: ("risk_already_held", "the symbol is held already"),
    RISK_SLOT: ("risk_slot", "the intent is larger than one position slot"),
    RTH_DAILY_CAP: ("rth_daily_cap", "the ticker's or the day's cap of actionable signals is reached"),
    ETF_LOCK: ("etf_lock", "an intent for the ETF was made within the ETF lock"),
    APPROVAL_PRICE_MOVED: ("approval_price_moved",
                           "the price moved against the signal by more than APPROVAL_MAX_MOVE_PCT since it was made"),
    APPROVAL_STOP_CROSSED: ("approval_stop_crossed", "the price is already through the signal's stop"),
}

_BY_NAME = {name: code for code, (name, _) in REASONS.items()}


def reason_name(code: int) -> str:
    return REASONS[code][0]


def reason_words(code: int) -> str:
    return REASONS[code][1]


def reason_code(name: str) -> int:
    """The code of a stored reason (``protection:x`` and ``conflict:x`` by their prefix)."""
    base = name.split(":", 1)[0].split(" (", 1)[0]
    return _BY_NAME[base]


def reason_text(code: int, detail: str = "") -> str:
    """The reason as stored: the name, with its detail where the code has one (the rule, the symbols, the
    approvals holding slots)."""
    name = REASONS[code][0]
    if not detail:
        return name
    if code in (PROTECTION, CONFLICT):
        return f"{name}:{detail}"
    return f"{name} ({detail})"
