"""What an intent becomes when it is sent (rules §9): re-priced at the current price, or refused in words.

An intent is priced when its signal is made. A manual approval comes later, so the order that leaves is built again
at the price of the moment with the function that built the intent (``RiskManager.price_entry``): the size rule's
shares for the account as it is now (never above one slot), the stop and take-profit from the current price. Before
that: trading paused, a protection pausing entries, the price since the signal (``core.rules.approval``) and the risk
checks of an entry, each refusal with a sentence a trader reads and its stored code.

``quote_send`` only reads: the Approvals page shows its answer on each card ("as it would be sent now"), and an
approval acts on the very same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.engine.account import AccountState, EntryOrder, RiskManager
from core.engine.intents import OrderIntent
from core.rules import approval
from core.rules.params import (
    P_DAILY_LOSS_LIMIT,
    P_MAX_CONCURRENT_RISK,
    P_MAX_EXPOSURE,
    P_MAX_POSITIONS,
    P_MIN_POSITION_FRACTION,
    P_MIN_SLOTS,
)
from core.rules.reasons import (
    APPROVAL_PRICE_MOVED,
    APPROVAL_STOP_CROSSED,
    OK,
    PAUSED,
    PROTECTION,
    RISK_ALREADY_HELD,
    RISK_BUYING_POWER,
    RISK_CONCURRENT,
    RISK_DAILY_LOSS,
    RISK_EXPOSURE,
    RISK_MAX_POSITIONS,
    RISK_NO_PRICE,
    RISK_SIZE_TOO_SMALL,
    RISK_SIZE_ZERO,
    RISK_SLOT,
    reason_code,
    reason_name,
    reason_words,
)


@dataclass(frozen=True)
class SendQuote:
    """An intent as it would be sent at ``at``: the order, or the refusal (``code`` != OK) and its words."""
    intent_id: str
    symbol: str
    side: str
    kind: str
    at: datetime
    signal_price: float
    signal_at: datetime
    price_now: float | None
    qty: float
    stop_price: float | None
    take_profit_price: float | None
    risk_after: float | None
    code: int
    words: str  # the refusal in a sentence ("" when it would be sent)
    stored: str = ""  # the code as intents and decisions store it (``risk_max_positions (1 pending approval)``)

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def move(self) -> float | None:
        """Since the signal, as a fraction of its price."""
        if self.price_now is None or not self.signal_price > 0:
            return None
        return approval.price_move(self.signal_price, self.price_now)

    @property
    def notional(self) -> float:
        return round(self.qty * (self.price_now or self.signal_price), 2)

    @property
    def note(self) -> str:
        """A refusal as the intent's note and the command's answer: the sentence, the code beside it."""
        return f"{self.words} ({self.stored or reason_name(self.code)})"

    def summary(self) -> str:
        """What was sent, in one line."""
        what = f"{self.side.upper()} {self.qty:g} {self.symbol}"
        if self.kind == "exit":
            return f"{what} at market (closing the position)"
        price = self.price_now if self.price_now is not None else self.signal_price
        move = self.move
        since = f", {signed_pct(move)} since the signal at ${self.signal_price:,.2f}" if move is not None else ""
        return (f"{what} at ~${price:,.2f}{since}; stop ${self.stop_price:,.2f}, "
                f"take-profit ${self.take_profit_price:,.2f}")


def signed_pct(x: float, digits: int = 1) -> str:
    """+1.2 % / −3.1 % (a real minus sign; never "-0.0 %")."""
    value = round(x * 100, digits)
    if value == 0:
        return f"{0:.{digits}f} %"
    return f"{'+' if value > 0 else '−'}{abs(value):.{digits}f} %"


def refusal_words(code: int, intent: OrderIntent, price_now: float | None, state: AccountState, risk: RiskManager,
                  max_move_pct: float, detail: str = "") -> str:
    """A refusal in a trader's words, with the numbers that decided it."""
    p = risk.p
    sym = intent.symbol
    if code == APPROVAL_PRICE_MOVED and price_now is not None:
        digits = 1 if max_move_pct >= 0.01 else 2  # a limit under 1 %: enough digits to see the move past it
        return (f"{sym} moved {signed_pct(approval.price_move(intent.price, price_now), digits)} since the signal "
                f"(limit {max_move_pct * 100:.{digits}f} %): not sent")
    if code == APPROVAL_STOP_CROSSED and price_now is not None:
        return f"{sym} at ${price_now:,.2f} is already through the signal's stop ${intent.stop_price:,.2f}: not sent"
    if code == PAUSED:
        return "trading is paused: no new entries"
    if code == PROTECTION:
        return f"the {detail} protection pauses new entries" if detail else reason_words(code)
    if code == RISK_DAILY_LOSS:
        return (f"daily loss limit reached: down {risk.daily_loss(state) * 100:.2f} % today "
                f"(limit {p[P_DAILY_LOSS_LIMIT] * 100:.1f} %)")
    if code == RISK_MAX_POSITIONS:
        waiting = state.pending_approvals
        return (f"every position slot is taken: {len(state.positions)} open, {state.pending_count} pending of "
                f"{p[P_MAX_POSITIONS]:g}" + (f" ({waiting} waiting for approval)" if waiting else ""))
    if code == RISK_SLOT:
        return f"would exceed the ${p[P_MAX_EXPOSURE] * state.equity / p[P_MIN_SLOTS]:,.0f} slot"
    if code == RISK_EXPOSURE:
        return (f"no exposure left: ${state.exposure:,.0f} of the ${p[P_MAX_EXPOSURE] * state.equity:,.0f} "
                f"maximum ({p[P_MAX_EXPOSURE] * 100:.0f} % of equity) is used")
    if code == RISK_BUYING_POWER:
        return f"not enough buying power: ${max(0.0, state.buying_power):,.2f} left"
    if code == RISK_SIZE_TOO_SMALL and price_now:
        full = risk.full_size(state, price_now)
        return (f"what is left buys less than {p[P_MIN_POSITION_FRACTION] * 100:.0f} % of a full position "
                f"({full:,} shares at ${price_now:,.2f})")
    if code == RISK_CONCURRENT:
        return f"would take concurrent stop risk past its {p[P_MAX_CONCURRENT_RISK] * 100:.1f} % maximum"
    if code == RISK_ALREADY_HELD:
        return f"{sym} is held already"
    if code == RISK_NO_PRICE:
        return f"no current price for {sym}"
    if code == RISK_SIZE_ZERO:
        return "nothing to buy at the current price"
    return reason_words(code)


def quote_send(intent: OrderIntent, state: AccountState, price_now: float | None, risk: RiskManager, *,
               paused: bool, protection: str | None, max_move_pct: float, at: datetime) -> SendQuote:
    """The order ``intent`` would be sent as at ``at`` (``state``: the account without this intent), or why not.

    An exit is sent as it is (a market close of the position; exits never need permission). A buy is refused
    while trading is paused or a protection pauses entries, when the price since the signal fails
    ``check_price_since_signal``, or when the risk checks refuse it at the current price; otherwise it is
    re-priced: ``RiskManager.price_entry`` at ``price_now``."""
    def answer(code: int, order: EntryOrder | None = None, stored: str = "", detail: str = "") -> SendQuote:
        words = "" if code == OK else refusal_words(code, intent, price_now, state, risk, max_move_pct, detail)
        return SendQuote(
            intent.id, intent.symbol, intent.side, intent.kind, at, intent.price, intent.created_at, price_now,
            order.qty if order else intent.qty, order.stop_price if order else intent.stop_price,
            order.take_profit_price if order else intent.take_profit_price,
            order.risk_after if order else intent.risk_after, code, words, stored)

    if intent.is_exit or intent.side == "sell":
        return answer(OK)
    if paused:
        return answer(PAUSED)
    if protection is not None:
        return answer(PROTECTION, stored=f"{reason_name(PROTECTION)}:{protection}", detail=protection)
    code = approval.check_price_since_signal(intent.price, price_now or 0.0, intent.stop_price or 0.0,
                                             max_move_pct)
    if code != OK:
        return answer(code)
    assert price_now is not None  # check_price_since_signal refuses a missing price
    ok, stored = risk.check_signal_risk_feasibility(state, price_now)
    if not ok:
        return answer(reason_code(stored), stored=stored)
    order = risk.price_entry(state, price_now)
    ok, stored = risk.should_allow_trade(state, intent.symbol, intent.side, order.qty, price_now)
    if not ok:
        return answer(reason_code(stored), order, stored=stored)
    return answer(OK, order)


def without_intent(state: AccountState, intent: OrderIntent) -> AccountState:
    """The account as the intent's own re-check sees it: the intent is counted as pending in ``state``."""
    buy = intent.side == "buy"
    return AccountState(state.equity, state.cash, state.buying_power, state.start_of_day_equity, state.positions,
                        max(0.0, state.pending_notional - (intent.qty * intent.price if buy else 0.0)),
                        max(0, state.pending_count - (1 if buy else 0)),
                        max(0, state.pending_approvals - (1 if buy else 0)))

