"""Small changes to the rules and the untrusted-input checks, each of which some test must notice.

    python bench/mutations.py [--only SUBSTRING] [--jobs 1]

Each mutation edits one line of a copy of the repository (a threshold, ``<`` for ``<=``, a removed check, a
dropped fee), runs the tests that guard it and reports whether they failed ("killed") or not ("SURVIVED"). The
working tree is never touched. Not part of ``make test``: it runs the selected tests once per mutation.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BOUNDARY = ["tests/test_rule_boundaries.py", "tests/test_rule_boundaries_baskets.py",
            "tests/test_rule_boundaries_risk.py", "tests/test_rule_decisions.py", "tests/test_rules_plain.py"]
RISK = ["tests/test_rules_plain.py", "tests/test_rule_boundaries_risk.py", "tests/test_risk.py"]
BASKETS = ["tests/test_rule_boundaries_baskets.py", "tests/test_rule_decisions.py", "tests/test_rules_plain.py"]
GATES = ["tests/test_rules_plain.py", "tests/test_rule_boundaries.py", "tests/test_ratelimit_and_gates.py",
         "tests/test_rule_decisions.py"]
TOKENS = ["tests/test_rules_plain.py", "tests/test_ratelimit_and_gates.py", "tests/test_redis_buckets.py"]
PROTECT = ["tests/test_rules_plain.py", "tests/test_rule_boundaries_protections.py", "tests/test_protections.py"]
FILLS = ["tests/test_rules_plain.py", "tests/test_sim_broker.py"]
SECURITY = ["tests/security/test_poison_commands.py", "tests/security/test_forged_stream.py"]
KERNEL = ["tests/test_kernel_parity.py", "tests/test_kernel_parity_files.py"]
# issue 26: protections at their defaults, money with fees, orders, closing, intents and the simulated broker
PROTECT_DEFAULTS = ["tests/test_rule_boundaries_protections.py", "tests/test_protections.py"]
MONEY = ["tests/test_money_fees.py", "tests/test_sim_broker.py"]
LEDGER = ["tests/test_money_fees.py", "tests/test_protections.py", "tests/test_engine.py"]
ORDERS = ["tests/test_approvals.py", "tests/test_engine.py", "tests/test_close_positions.py"]
CLOSING = ["tests/test_close_positions.py", "tests/test_money_fees.py"]
SIM = ["tests/test_sim_broker.py", "tests/test_engine.py", "tests/test_money_fees.py", "tests/test_close_positions.py"]
KELLY = ["tests/test_risk.py"]
# issue 25: what an approval sends (re-priced now, or refused in words), answers that stay, toasts, Kelly's sample
APPROVAL = ["tests/test_approval_pricing.py", "tests/test_approvals.py"]
APPROVAL_UI = ["tests/test_answers.py", "tests/test_app.py", "tests/test_close_positions_page.py"]
KELLY_PAGE = ["tests/test_risk.py", "tests/test_app.py"]

# issue 28: the session replay's causes and the live bars it reads; the live feed's long bars scored wide
SESSION = ["tests/test_session_replay.py", "tests/test_session_replay_alpaca.py"]
LIVE_BARS = ["tests/test_live_bars.py", "tests/test_session_replay_alpaca.py"]
FEED = ["tests/test_alpaca.py", "tests/test_feed_preload.py"]
POOL = ["tests/test_sweep_cancel.py", "tests/test_walkforward.py"]

# (name, file, old text, new text, tests)
MUTATIONS: list[tuple[str, str, str, str, list[str]]] = [
    ("cutoff >= becomes >", "core/rules/gates.py", "return OK if abs(score) >= cutoff else BELOW_CUTOFF",
     "return OK if abs(score) > cutoff else BELOW_CUTOFF", GATES),
    ("cutoff floor 0.01 dropped", "core/rules/gates.py", "return max(0.01, round(base + cutoff_delta, 6))",
     "return round(base + cutoff_delta, 6)", GATES),
    ("high-vol regime >= becomes >", "core/rules/gates.py", "if vol_spike >= high_vol_spike:",
     "if vol_spike > high_vol_spike:", GATES),
    ("open segment < becomes <=", "core/rules/gates.py", "if minutes_since_open < segment_min:",
     "if minutes_since_open <= segment_min:", GATES),
    ("close segment <= becomes <", "core/rules/gates.py", "if minutes_to_close <= segment_min:",
     "if minutes_to_close < segment_min:", GATES),
    ("locks hold through their expiry", "core/rules/gates.py", "    return now < until",
     "    return now <= until", GATES),
    ("direction lock on any sign", "core/rules/gates.py",
     "return DIRECTION_LOCK if lock_holds(lock_until, now) and lock_sign != sign else OK",
     "return DIRECTION_LOCK if lock_holds(lock_until, now) else OK", GATES),
    ("pause check removed", "core/rules/gates.py", "    if paused:\n        return PAUSED\n", "", BOUNDARY),
    ("symbol cooldown before protection", "core/rules/gates.py",
     "    if protection_pause:\n        return PROTECTION\n    if symbol_cooldown:\n        return SYMBOL_COOLDOWN\n",
     "    if symbol_cooldown:\n        return SYMBOL_COOLDOWN\n    if protection_pause:\n        return PROTECTION\n",
     BOUNDARY + PROTECT),
    ("held check removed", "core/rules/gates.py", "    if held:\n        return ETF_HELD if etf else ALREADY_HELD\n",
     "", BOUNDARY),
    ("RTH cap >= becomes >", "core/rules/gates.py", "if symbol_count >= symbol_cap or global_count >= global_cap",
     "if symbol_count > symbol_cap or global_count >= global_cap", GATES),
    ("global cap ignored", "core/rules/gates.py", "if symbol_count >= symbol_cap or global_count >= global_cap",
     "if symbol_count >= symbol_cap", GATES),
    ("tier due without jitter", "core/rules/gates.py", "return not now - last_processed < interval_s - jitter_s",
     "return not now - last_processed < interval_s", GATES),
    ("direction lock starts before the entry blocks again", "core/engine/decide.py",
     "        basket = None\n",
     "        basket = None\n        locks.lock_direction(sym, sign, p[P_DIRECTION_LOCK_S], now)\n", GATES),
    ("daily loss >= becomes >", "core/rules/risk.py", "return loss >= limit - EPS", "return loss > limit + EPS", RISK),
    ("max positions >= becomes >", "core/rules/risk.py", "return n_positions + n_pending >= max_positions",
     "return n_positions + n_pending > max_positions", RISK),
    ("pending entries not counted", "core/rules/risk.py", "return n_positions + n_pending >= max_positions",
     "return n_positions >= max_positions", RISK),
    ("min position fraction < becomes <=", "core/rules/risk.py",
     "if qty < p[P_MIN_POSITION_FRACTION] * full_position_size(p, equity, price) - EPS:",
     "if qty <= p[P_MIN_POSITION_FRACTION] * full_position_size(p, equity, price):", RISK),
    ("concurrent risk > becomes >=", "core/rules/risk.py",
     "if current_risk + qty * price * p[P_STOP_LOSS_PCT] / equity > p[P_MAX_CONCURRENT_RISK] + EPS:",
     "if current_risk + qty * price * p[P_STOP_LOSS_PCT] / equity >= p[P_MAX_CONCURRENT_RISK] - EPS:", RISK),
    ("slot cap dropped", "core/rules/risk.py",
     "    for code, notional in ((CAPPED_SLOT, max_exposure * equity / min_slots),\n",
     "    for code, notional in ((CAPPED_SLOT, float('inf')),\n", RISK),
    ("sizing without its epsilon", "core/rules/risk.py",
     "raw = math.floor((risk_per_trade * equity) / (price * stop_loss_pct) + EPS)",
     "raw = math.floor((risk_per_trade * equity) / (price * stop_loss_pct))", RISK),
    ("final check: slot tolerance dropped", "core/rules/risk.py",
     "if notional > p[P_MAX_EXPOSURE] * equity / p[P_MIN_SLOTS] + price:",
     "if notional > p[P_MAX_EXPOSURE] * equity / p[P_MIN_SLOTS]:", RISK),
    ("sub-dollar prices rounded to cents", "core/rules/bracket.py", "if price >= 1.0 else round(price, 4)",
     "if price >= 1.0 else round(price, 2)", ["tests/test_rules_plain.py"]),
    ("stop above the entry", "core/rules/bracket.py", "return price_increment(entry * (1 - stop_loss_pct))",
     "return price_increment(entry * (1 + stop_loss_pct))", BOUNDARY + FILLS),
    ("basket ratio >= becomes >", "core/rules/baskets.py", "negative_ratio >= neg_ratio",
     "negative_ratio > neg_ratio", BASKETS),
    ("basket mean <= becomes <", "core/rules/baskets.py", "mean_score <= mean_max", "mean_score < mean_max",
     BASKETS),
    ("basket members >= becomes >", "core/rules/baskets.py", "return n >= min_signals and",
     "return n > min_signals and", BASKETS),
    ("a zero score counts as negative", "core/rules/baskets.py", "            if scores[i] < 0:",
     "            if scores[i] <= 0:", BASKETS),
    ("member age <= becomes <", "core/rules/baskets.py", "return now - score_ts <= max_age_s",
     "return now - score_ts < max_age_s", BASKETS),
    ("streak survives the session change", "core/rules/baskets.py",
     "if previous_session != session or not now - previous_ts <= gap_s:", "if not now - previous_ts <= gap_s:",
     BASKETS),
    ("streak gap <= becomes <", "core/rules/baskets.py",
     "if previous_session != session or not now - previous_ts <= gap_s:",
     "if previous_session != session or not now - previous_ts < gap_s:", BASKETS),
    ("basket fires one tick early", "core/rules/baskets.py", "return condition and streak >= needed",
     "return condition and streak >= needed - 1", BASKETS),
    ("ETF skips the losing-exit cooldown", "core/engine/routing.py",
     "symbol_cooldown = gates.lock_holds(locks.symbol_cooldown_until(etf, now), now.timestamp())",
     "symbol_cooldown = False", BASKETS),
    ("borrow window < becomes <=", "core/rules/tokens.py", "and second < borrow_window_s and",
     "and second <= borrow_window_s and", TOKENS),
    ("tier B borrows too", "core/rules/tokens.py", "if tier == TIER_A and allow_borrow", "if allow_borrow", TOKENS),
    ("borrow ignores the fallback switch", "core/rules/tokens.py", "if tier == TIER_A and allow_borrow and",
     "if tier == TIER_A and", TOKENS),
    ("protection sample >= becomes >", "core/rules/protections.py", "return sample >= min_sample and",
     "return sample > min_sample and", PROTECT),
    ("toward zero passes zero", "core/rules/protections.py",
     "return min(0.0, round(old + value, 6)) if old < 0 else old", "return round(old + value, 6) if old < 0 else old",
     PROTECT),
    ("stop loses the tie to take-profit", "core/rules/fills.py",
     "        if lows[i] <= stop:", "        if lows[i] <= stop and not highs[i] >= take_profit:", FILLS),
    ("stop fills without slippage", "core/rules/fills.py", "return i, LEG_STOP, px * (1 - slippage)",
     "return i, LEG_STOP, px", FILLS),
    ("buy fills without slippage", "core/rules/fills.py",
     "return open_price * (1 + slippage) if is_buy else open_price * (1 - slippage)",
     "return open_price if is_buy else open_price * (1 - slippage)", FILLS),
    ("fee dropped from the cash check", "core/rules/fills.py", "return not cost + fee > cash + CASH_TOLERANCE",
     "return not cost > cash + CASH_TOLERANCE", FILLS),
    ("command size limit off by one", "core/engine/commands.py", "if len(raw) > MAX_PAYLOAD:",
     "if len(raw) >= MAX_PAYLOAD:", SECURITY),
    ("NaN allowed in commands", "core/engine/commands.py",
     "value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)", "value = json.loads(raw)",
     SECURITY),
    ("any command source accepted", "core/engine/commands.py", "        if source not in COMMAND_SOURCES:\n",
     "        if False:\n", SECURITY),
    ("a command failing inside is not caught", "core/engine/tick.py",
     "            except Exception as e:  # a command must never stop the engine",
     "            except ZeroDivisionError as e:  # a command must never stop the engine", SECURITY),
    ("stream price tolerance <= becomes <", "core/engine/decide.py",
     "abs(close - own.close) <= tolerance * own.close", "abs(close - own.close) < tolerance * own.close", SECURITY),
    ("stream signature not checked", "core/engine/decide.py",
     "m = raw if not mid else self.stream.verified(raw)", "m = {k: v for k, v in raw.items() if k != 'sig'}",
     SECURITY),
    ("stream price from the message", "core/engine/decide.py",
     "        return at, sym, own, score\n",
     "        return at, sym, own._replace(close=close), score\n", SECURITY),
    # ---- issue 26: protections at the defaults of docs/rules.md §10
    ("max drawdown 5 % becomes 8 %", "core/config.py",
     "protection_max_drawdown: float = Field(0.05,", "protection_max_drawdown: float = Field(0.08,",
     PROTECT_DEFAULTS),
    ("max drawdown needs 9 snapshots, not 10", "core/rules/protections.py",
     'sample="equity_samples",\n' + ' ' * 26 + 'min_sample=10)',
     'sample="equity_samples",\n' + ' ' * 26 + 'min_sample=9)',
     PROTECT_DEFAULTS),
    ("drawdown pause 7200 s becomes 3600 s", "core/config.py",
     "protection_drawdown_pause_s: int = Field(7200,", "protection_drawdown_pause_s: int = Field(3600,",
     PROTECT_DEFAULTS),
    ("drawdown window one day becomes 12 h", "core/config.py",
     "protection_drawdown_window_s: int = Field(86_400,", "protection_drawdown_window_s: int = Field(43_200,",
     PROTECT_DEFAULTS),
    ("Tier-A overflow 15 % becomes 20 %", "core/rules/protections.py",
     'Condition("tier_a_overflow_max", ">=", 0.15,', 'Condition("tier_a_overflow_max", ">=", 0.20,',
     PROTECT_DEFAULTS),
    ("Tier-A overflow needs 29 requests, not 30", "core/rules/protections.py",
     'sample="tier_a_requested", min_sample=30)', 'sample="tier_a_requested", min_sample=29)', PROTECT_DEFAULTS),
    ("LLM surge 30 calls an hour becomes 40", "core/config.py",
     "protection_llm_surge_per_hour: float = Field(30.0,", "protection_llm_surge_per_hour: float = Field(40.0,",
     PROTECT_DEFAULTS),
    ("LLM surge needs 9 calls, not 10", "core/rules/protections.py",
     'sample="llm_calls",\n' + ' ' * 26 + 'min_sample=10)', 'sample="llm_calls",\n' + ' ' * 26 + 'min_sample=9)',
     PROTECT_DEFAULTS),
    ("LLM or overflow cool-off 7200 s becomes 3600 s", "core/rules/protections.py",
     "window_s=7200, cooloff_s=7200,", "window_s=7200, cooloff_s=3600,", PROTECT_DEFAULTS),
    ("overflow raises the LLM minimum to 0.6, not 0.65", "core/rules/protections.py",
     '"llm_min_signal_score": ("at_least", 0.65)', '"llm_min_signal_score": ("at_least", 0.6)', PROTECT_DEFAULTS),
    ("stop-loss guard count 3 becomes 4", "core/config.py",
     "protection_stoploss_count: int = Field(3,", "protection_stoploss_count: int = Field(4,", PROTECT_DEFAULTS),
    ("stop-loss guard pause 1800 s becomes 900 s", "core/config.py",
     "protection_stoploss_pause_s: int = Field(1800,", "protection_stoploss_pause_s: int = Field(900,",
     PROTECT_DEFAULTS),
    ("stop-loss guard window 1 h becomes 2 h", "core/config.py",
     "protection_stoploss_window_s: int = Field(3600,", "protection_stoploss_window_s: int = Field(7200,",
     PROTECT_DEFAULTS),
    ("stop-out rate 40 % becomes 45 %", "core/rules/protections.py",
     'Condition("stop_out_rate", ">=", 0.40,', 'Condition("stop_out_rate", ">=", 0.45,', PROTECT_DEFAULTS),
    ("stop-out rate needs 4 exits, not 5", "core/rules/protections.py",
     'sample="exits", min_sample=5)', 'sample="exits", min_sample=4)', PROTECT_DEFAULTS),
    ("flip-flop rate 25 % becomes 30 %", "core/rules/protections.py",
     'Condition("flip_flop_rate", ">=", 0.25,', 'Condition("flip_flop_rate", ">=", 0.30,', PROTECT_DEFAULTS),
    ("signal quality needs 6 actionable signals, not 5", "core/rules/protections.py",
     'Condition("actionable", ">=", 5, sample="actionable", min_sample=5)',
     'Condition("actionable", ">=", 6, sample="actionable", min_sample=6)', PROTECT_DEFAULTS),
    ("signal quality cool-off 3600 s becomes 1800 s", "core/rules/protections.py",
     "window_s=3600, cooloff_s=3600,", "window_s=3600, cooloff_s=1800,", PROTECT_DEFAULTS),
    ("protection >= becomes >", "core/rules/protections.py", "        return value >= threshold",
     "        return value > threshold", PROTECT_DEFAULTS),
    ("a pause shorter than its cool-off ends with the pause", "core/engine/protect.py",
     "until = now + timedelta(seconds=max(int(setting_value(rule.cooloff_s, s)), pause_s))",
     "until = now + timedelta(seconds=int(setting_value(rule.cooloff_s, s)) // 2)", PROTECT_DEFAULTS),
    ("Kelly warns at a margin of 1 too", "core/rules/risk.py", '"warning": measured and margin < 1.0}',
     '"warning": measured and margin <= 1.0}', KELLY),
    # ---- approving is trading (issue 25)
    ("the move limit is missed by its tolerance", "core/rules/approval.py",
     "if price_move(signal_price, price_now) < -max_move_pct - EPS:",
     "if price_move(signal_price, price_now) < -max_move_pct + EPS:", APPROVAL),
    ("the move limit doubled", "core/rules/approval.py", "< -max_move_pct - EPS:", "< -2 * max_move_pct - EPS:",
     APPROVAL),
    ("a rise refused like a fall", "core/rules/approval.py",
     "if price_move(signal_price, price_now) < -max_move_pct - EPS:",
     "if abs(price_move(signal_price, price_now)) > max_move_pct + EPS:", APPROVAL),
    ("the signal's stop not checked", "core/rules/approval.py",
     "    if signal_stop > 0 and stop_hit(price_now, signal_stop):\n        return APPROVAL_STOP_CROSSED\n", "",
     APPROVAL),
    ("the signal's stop level itself allowed", "core/rules/approval.py", "stop_hit(price_now, signal_stop)",
     "price_now < signal_stop", APPROVAL),
    ("an approval sends the intent as it was", "core/engine/orders.py",
     "                intent = self._reprice(intent, q)\n", "                pass\n", APPROVAL),
    ("an approval sized at the signal's price", "core/engine/sending.py",
     "    order = risk.price_entry(state, price_now)", "    order = risk.price_entry(state, intent.price)",
     APPROVAL),
    ("a protection's pause does not stop an approval", "core/engine/sending.py",
     "    if protection is not None:\n", "    if False:\n", APPROVAL),
    ("the final check skipped on approval", "core/engine/sending.py",
     "    if not ok:\n        return answer(reason_code(stored), order, stored=stored)\n", "", APPROVAL),
    ("the intent counts against its own re-check", "core/engine/sending.py",
     "max(0.0, state.pending_notional - (intent.qty * intent.price if buy else 0.0))",
     "state.pending_notional", APPROVAL),
    ("an approval's daily-loss halt not recorded", "core/engine/orders.py",
     "            self.entry_risk.note_halt(q.stored, state, now)\n", "", APPROVAL),
    ("a sent order counted at the signal's price", "core/state/book.py",
     'price = r.get("sent_price") or r["price"]', 'price = r["price"]', APPROVAL),
    ("an exit refused like a buy", "core/engine/sending.py",
     "    if intent.is_exit or intent.side == \"sell\":\n        return answer(OK)\n", "", APPROVAL),
    ("an answer gone at the next rerun", "ui/answers.py", "    answer = current(scope)\n",
     "    answer = st.session_state.pop(_key(scope), None)\n", APPROVAL_UI),
    ("a toast on the Approvals page", "ui/sidebar.py", "    if not new or quiet:", "    if not new:", APPROVAL_UI),
    ("a page load toasts what already waits", "ui/sidebar.py",
     "    if seen is None:  # the session's first look: what already waits is not news\n"
     "        st.session_state[\"_announced_intents\"] = set(ids)\n        return []\n",
     "    if seen is None:\n        seen = set()\n        st.session_state[\"_announced_intents\"] = seen\n",
     APPROVAL_UI),
    ("Kelly shown from 29 trades", "core/rules/risk.py", "KELLY_MIN_TRADES = 30", "KELLY_MIN_TRADES = 29",
     KELLY_PAGE),
    ("Kelly shown from any sample", "core/rules/risk.py", "return trades >= KELLY_MIN_TRADES and payoff_ratio > 0",
     "return payoff_ratio > 0", KELLY_PAGE),
    # ---- money: the fee rule, the ledger
    ("fee per share left out", "core/rules/fills.py", "    return per_order + per_share * qty",
     "    return per_order", MONEY),
    ("fee per share charged once an order", "core/rules/fills.py", "    return per_order + per_share * qty",
     "    return per_order + per_share", MONEY),
    ("broker drops the per-share fee", "core/venues/sim/broker.py",
     "return order_fee(qty, self.fee, self.fee_per_share)", "return order_fee(qty, self.fee, 0.0)", MONEY),
    ("fee not taken from the cash", "core/venues/sim/broker.py", "amount = sign * qty * price + fee",
     "amount = sign * qty * price", MONEY),
    ("fees left out of a trade's P&L", "core/engine/ledger.py", "pnl = (price - entry) * close_qty - fees",
     "pnl = (price - entry) * close_qty", LEDGER),
    ("exit fee left out of a trade", "core/engine/ledger.py", "        fees = fee + entry_fees\n",
     "        fees = entry_fees\n", LEDGER),
    ("entry fees charged on every piece of a sale", "core/engine/ledger.py",
     'entry_fees = held_fees * close_qty / pos["qty"] if pos["qty"] > 0 else held_fees',
     "entry_fees = held_fees", LEDGER),
    ("entry fees kept whole after a partial sale", "core/engine/ledger.py",
     "book.update_position(symbol, qty=left, fees=held_fees - entry_fees)", "book.update_position(symbol, qty=left)",
     LEDGER),
    ("a buy's fee not kept with the position", "core/engine/ledger.py",
     'book.update_position(symbol, fees=(book.positions[symbol].get("fees") or 0) + fee)',
     'book.update_position(symbol, fees=(book.positions[symbol].get("fees") or 0))', LEDGER),
    ("a second buy fill keeps the first price", "core/engine/ledger.py",
     'avg = (pos["qty"] * pos["avg_price"] + qty * price) / total', 'avg = pos["avg_price"]', LEDGER),
    ("a losing exit starts no symbol cooldown", "core/engine/ledger.py", "        if pnl < 0:  # no quick re-entry",
     "        if pnl < -1e12:  # no quick re-entry", LEDGER),
    ("a leg's exit is not named by its leg", "core/engine/ledger.py",
     'reason = leg or ((intent or {}).get("reason") or "exit")', 'reason = (intent or {}).get("reason") or "exit"',
     LEDGER),
    ("a sell closes more than the position", "core/engine/ledger.py", 'close_qty = min(qty, pos["qty"])',
     "close_qty = qty", LEDGER),
    # ---- orders and intents
    ("approval skips the risk re-check", "core/engine/sending.py",
     "    if not ok:\n        return answer(reason_code(stored), stored=stored)\n", "", ORDERS + APPROVAL),
    ("an entry approved while paused", "core/engine/sending.py", "    if paused:\n        return answer(PAUSED)\n",
     "", ORDERS),
    ("an expired intent can be approved", "core/engine/orders.py",
     "            if intent_expired(intent.expires_at, intent.approve_by, now, self._wall_now()):",
     "            if False:", ORDERS),
    ("an intent expires one tick late", "core/engine/intents.py", "    return expires_at <= now",
     "    return expires_at < now", ORDERS),
    ("client order id not from the intent alone", "core/engine/intents.py", 'return f"tb-{digest}"',
     'return f"tb-{digest}-{id(intent_id)}"', ORDERS),
    ("a rejected order's intent counted as submitted", "core/engine/intents.py",
     'status = REJECTED if order.status == "rejected" else SUBMITTED', "status = SUBMITTED", ORDERS),
    ("an exit sent as a plain sell", "core/engine/intents.py", "        if intent.is_exit:\n",
     "        if False:\n", ORDERS),
    # ---- closing by hand
    ("a second close of a closing position is sent", "core/engine/closing.py",
     "            busy = self._closing_intent(sym)\n            if busy is not None:\n",
     "            busy = self._closing_intent(sym)\n            if False:\n", CLOSING),
    ("a manual close leaves a waiting exit live", "core/engine/closing.py",
     '            self._supersede_pending(sym, now, who=who, note="superseded by a manual close")\n', "", CLOSING),
    ("flatten all does not pause entries", "core/engine/closing.py",
     "            if not self.live.params.paused:\n                self.live.set_params(",
     "            if False:\n                self.live.set_params(", CLOSING),
    ("flatten all leaves waiting intents", "core/engine/closing.py",
     '                    set_intent_status(self.store, intent_id, REJECTED, now, who=who, note="rejected by flatten '
     'all")', "                    pass", CLOSING),
    ("flatten all cancels no orders", "core/engine/closing.py",
     "results = self.broker.close_all_positions(now, ids, cancel_orders=True)",
     "results = self.broker.close_all_positions(now, ids, cancel_orders=False)", CLOSING),
    ("a new close attempt reuses the first id", "core/engine/closing.py",
     "        attempt = 1 + int(self.store.scalar(", "        attempt = 1 + 0 * int(self.store.scalar(", CLOSING),
    ("manual close booked as a plain exit", "core/engine/closing.py", 'MANUAL_CLOSE = "manual_close"',
     'MANUAL_CLOSE = "exit"', CLOSING),
    # ---- the simulated broker
    ("a repeated client id makes a second order", "core/venues/sim/broker.py",
     "            return existing  # idempotent: the same client id is the same order",
     "            pass", SIM),
    ("a sale of more than is held accepted", "core/venues/sim/broker.py",
     'elif req.side == "sell" and req.qty > self._held(req.symbol) + 1e-9:', "elif False:", SIM),
    ("a buy the cash cannot cover accepted", "core/venues/sim/broker.py",
     'if o.side == "buy" and not affordable(o.qty * price, self._fee(o.qty), self._cash()):', "if False:", SIM),
    ("one-cancels-other off", "core/venues/sim/broker.py", "            if other.id != leg.id:",
     "            if False:", SIM),
    ("legs wake one bar after the entry", "core/venues/sim/broker.py",
     "leg.active_from, leg.checked_until = float(bar_ts), float(bar_ts - 1)",
     "leg.active_from, leg.checked_until = float(bar_ts + 60), float(bar_ts + 59)", SIM),
    ("broker average price is the last fill's", "core/venues/sim/broker.py",
     "new_avg = (held * avg + qty * price) / new_qty if sign > 0 and new_qty > 0 else avg",
     "new_avg = price if sign > 0 and new_qty > 0 else avg", SIM),
    ("a leg sells what it was sent for, not what is held", "core/venues/sim/broker.py",
     "qty = min(leg.qty, self._held(leg.symbol))", "qty = leg.qty", SIM),
    ("account equity without the positions", "core/venues/sim/broker.py",
     "equity = cash + sum(p.qty * p.market_price for p in self.get_positions(now))", "equity = cash", SIM),
    ("closing a position leaves its legs", "core/venues/sim/broker.py",
     "            for o in [o for o in self._open.values() if o.symbol == symbol and o.parent_id is not None]:\n"
     '                self._set_status(o, "canceled", "position closed")\n', "", SIM),
    ("a gap through the stop fills at the stop", "core/rules/fills.py",
     "            px = opens[i] if opens[i] <= stop else stop", "            px = stop", FILLS + MONEY),
    ("a gap through the take-profit fills at its limit", "core/rules/fills.py",
     "opens[i] if opens[i] >= take_profit else take_profit", "take_profit", FILLS + MONEY),
    # the compiled research kernel and its driver: each must break parity with Engine.tick
    ("kernel: every tier on a 60 s interval", "core/research/kernel.py",
     "due[k] = ticker_due(K[k, K_LAST], t, K[k, K_INTERVAL], JITTER_S)",
     "due[k] = ticker_due(K[k, K_LAST], t, 60.0, JITTER_S)", KERNEL),
    ("kernel: legs never checked", "core/research/kernel.py",
     "                    if hit >= 0:  # the simulated broker fills it",
     "                    if hit >= 99:  # the simulated broker fills it", KERNEL),
    ("kernel: evidence sets no cooldown", "core/research/kernel.py",
     "        K[k, K_COOL] = t + p[P_COOLDOWN_S]\n", "        K[k, K_COOL] = t\n", KERNEL),
    ("kernel: borrowing whatever the fallback", "core/research/kernel.py",
     "got = take_token(own, S[S_LEFT_R], tier, second, p[P_RESERVE_FALLBACK] != 0.0, S[S_BORROW_S])",
     "got = take_token(own, S[S_LEFT_R], tier, second, True, S[S_BORROW_S])", KERNEL),
    ("kernel: equity row without cash", "core/research/kernel.py",
     "REC_EQ[e, 2] = S[S_CASH]", "REC_EQ[e, 2] = 0.0", KERNEL),
    ("kernel: stop checks one interval late", "core/research/kernel.py",
     "not t - S[S_LAST_STOP] < S[S_STOP_INTERVAL]", "not t - S[S_LAST_STOP] <= S[S_STOP_INTERVAL]", KERNEL),
    ("kernel: a bucket keeps its first bar", "core/research/kernel.py",
     "    BK[k, r, BK_BAR] = bar\n", "", KERNEL),
    ("driver: cap counts not read back", "core/research/fast.py",
     "K[k, kn.K_CAP] = st.caps.day_counts(day_iso, s)[0]", "K[k, kn.K_CAP] = 0", KERNEL),
    ("driver: stop checks' excursions dropped", "core/research/fast.py",
     "                e.ledger.update_excursions(pos[\"symbol\"], at)\n", "                pass\n", KERNEL),
    ("ledger: a missing bar hides the excursion", "core/engine/ledger.py",
     "        hi, lo = hi[~np.isnan(hi)], lo[~np.isnan(lo)]\n", "", KERNEL),
    ("settle: intents never expire", "core/engine/tick.py",
     "        self.orders.expire_intents(now)\n\n    def apply_commands", "\n    def apply_commands",
     ["tests/test_golden_replays.py", "tests/test_engine.py"]),
    # ---- issue 28: each difference's cause, the live bars kept
    ("session: a partly filled order is not broker", "core/research/session_replay.py",
     "0 < o[\"filled_qty\"] < o[\"qty\"] - 1e-9", "0 < o[\"filled_qty\"] < o[\"qty\"] - 1e9", SESSION),
    ("session: several fills of one order are not broker", "core/research/session_replay.py",
     "        if parts > 1:", "        if parts > 99:", SESSION),
    ("session: a rejection is not broker", "core/research/session_replay.py",
     "        if o[\"status\"] == \"rejected\":", "        if o[\"status\"] == \"rejected!\":", SESSION),
    ("session: an outage is not broker", "core/research/session_replay.py",
     "    if ev.in_window(d.ts, ev.outages):", "    if False and ev.in_window(d.ts, ev.outages):", SESSION),
    ("session: an outside order is not named", "core/research/session_replay.py",
     "d.kind == \"only_live\" and (o is None or o.get(\"intent_id\") is None)",
     "d.kind == \"only_live\" and (o is None and o.get(\"intent_id\") is None)", SESSION),
    ("session: a changed bar under a fill is not data", "core/research/session_replay.py",
     "    if d.table == \"fills\" and ev.bar_changed(d.symbol, row.get(\"ts\")):",
     "    if d.table == \"fills\" and False:", SESSION),
    ("session: a price-only difference is not fill_price", "core/research/session_replay.py",
     "        if set(d.fields) <= price_cols | {\"ts\"}:",
     "        if set(d.fields) <= price_cols | {\"ts\", \"qty\"}:", SESSION),
    ("session: a gap needs 30 cadences", "core/research/session_replay.py",
     "GAP_FACTOR = 3.0", "GAP_FACTOR = 30.0", SESSION),
    ("live bars: the later copy of a minute wins", "core/venues/alpaca/bar_cache.py",
     "merged.drop_duplicates(\"timestamp\", keep=\"first\")", "merged.drop_duplicates(\"timestamp\", keep=\"last\")",
     LIVE_BARS),
    ("live bars: written in place, not aside", "core/venues/alpaca/bar_cache.py",
     "        out.to_parquet(tmp, index=False)\n        os.replace(tmp, path)",
     "        out.to_parquet(path, index=False)", LIVE_BARS),
    ("feed: long bars' tail left out of the wide score", "core/feed.py",
     "        tail = min(len(self.ts), self.strategy.warmup_bars + 5)",
     "        tail = min(len(self.ts), self.strategy.warmup_bars - 5)", FEED),
    ("pool: a finished run stops its workers", "core/research/workers.py",
     "            if not finished:\n                self._stop_all()",
     "            if True:\n                self._stop_all()", POOL),
    ("pool: a failed run keeps its workers", "core/research/workers.py",
     "            if not finished:\n                self._stop_all()",
     "            if False:\n                self._stop_all()", POOL),
]


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "*.db*",
                                    "artifacts", "cache")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def run(name: str, file: str, old: str, new: str, tests: list[str], work: Path) -> tuple[str, float]:
    path = work / file
    original = path.read_text()
    if original.count(old) != 1:
        return f"NOT APPLIED ({original.count(old)} matches)", 0.0
    path.write_text(original.replace(old, new))
    t0 = time.time()
    try:
        res = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              *[t for t in tests if (work / t).exists()]], cwd=work, capture_output=True, text=True,
                             timeout=900)
        verdict = "killed" if res.returncode not in (0, 5) else "SURVIVED"
    except subprocess.TimeoutExpired:
        verdict = "killed (timeout)"
    finally:
        path.write_text(original)
    return verdict, time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run the mutations whose names contain one of these (';'-separated)")
    ap.add_argument("--skip", default="", help="leave out the mutations whose names contain one of these "
                                               "(';'-separated; 'kernel:;driver:' leaves out the slow parity runs)")
    args = ap.parse_args()
    survivors = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        copy_tree(work)
        for name, file, old, new, tests in MUTATIONS:
            if args.only and not any(part.strip() and part.strip() in name for part in args.only.split(";")):
                continue
            if args.skip and any(part.strip() and part.strip() in name for part in args.skip.split(";")):
                continue
            verdict, took = run(name, file, old, new, tests, work)
            print(f"{verdict:>22}  {took:6.1f} s  {name}  ({file})", flush=True)
            if verdict != "killed" and not verdict.startswith("killed"):
                survivors.append(name)
    print(f"\n{len(survivors)} survivor(s)" + (": " + "; ".join(survivors) if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
