"""Settings (rules §14) and the live parameters a trader changes at run time.

Every number of docs/rules.md is a setting with its default. Values come from
the environment, then ``.env``. Parsing is strict: the old bot crash-looped on
``TIER_A_TOKENS="6  # Tier A"``; here such a value stops start-up with one line
naming the variable and the value.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.bounds import BY_PARAM, BY_SETTING
from core.universe import Basket, Universe

_TICKER = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")



LIVE_TRADING_ACK = "I_UNDERSTAND_REAL_MONEY"
MAX_RELAXED_SESSIONS = 100  # RELAXED_SESSIONS and a command's profile_sessions_left


class ConfigError(ValueError):
    """A setting was refused; the message names the variable and the bad value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, validate_default=True,
        allow_inf_nan=False,  # SIM_START_CASH=inf passed every lower bound; no setting means infinity
    )

    # --- storage, modes ---
    db_path: str = "data/trading.db"
    seed: int = Field(7, ge=0)  # numpy's generator refuses negative seeds
    auto_mode: bool = False
    broker: Literal["sim", "alpaca"] = "sim"
    market_data: Literal["synthetic", "replay", "alpaca"] = "synthetic"
    bars_file: str | None = None
    strategy: str = "core.strategy:MomentumVwapStrategy"
    profile: Literal["default", "relaxed"] = "default"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- universe (rules §2) ---
    tier_a_tickers: str = "NVDA,TSLA,AAPL"
    tier_b_tickers: str = "MSFT,AMZN,META"
    bench_tickers: str = "GOOGL,AMD,AVGO"
    baskets_json: str = json.dumps(
        [
            {"name": "MEGATECH", "members": ["AAPL", "MSFT", "AMZN", "META", "GOOGL", "TSLA"],
             "inverse_etf": "SQQQ", "conflicts": ["QQQ", "TQQQ"], "index_etf": "QQQ"},
            {"name": "SEMIS", "members": ["NVDA", "AMD", "AVGO"],
             "inverse_etf": "SOXS", "conflicts": ["SOXX", "SOXL"], "index_etf": "SOXX"},
        ]
    )
    tier_a_interval_s: int = Field(30, ge=1, le=3600)
    tier_b_interval_s: int = Field(60, ge=1, le=3600)

    # --- rate limiting (rules §5) ---
    tier_a_tokens: int = Field(6, ge=0, le=10_000)
    tier_b_tokens: int = Field(3, ge=0, le=10_000)
    reserve_tokens: int = Field(1, ge=0, le=10_000)
    reserve_borrow_window_s: int = Field(10, ge=0, le=59)
    reserve_fallback: bool = True

    # --- gates (rules §4) ---
    cutoff_delta: float = BY_SETTING["cutoff_delta"].field(0.0)  # bounds: core/bounds.py, the one table
    cutoff_open: float = Field(0.35, gt=0, lt=1)
    cutoff_midday: float = Field(0.28, gt=0, lt=1)
    cutoff_close: float = Field(0.32, gt=0, lt=1)
    cutoff_segment_min: int = Field(30, ge=1, le=195)
    cutoff_high_vol_add: float = Field(0.05, ge=0, lt=1)
    cutoff_high_vol_spike: float = Field(0.5, ge=0, le=1)
    mixer_cooldown_s: int = BY_SETTING["mixer_cooldown_s"].field(180)
    direction_lock_s: int = BY_SETTING["direction_lock_s"].field(90)
    rth_daily_cap: int = Field(100, ge=0)
    tier_a_daily_cap: int = Field(40, ge=0)
    tier_b_daily_cap: int = Field(25, ge=0)
    bench_daily_cap: int = Field(10, ge=0)
    cap_idempotency_s: int = Field(90, ge=1)

    # --- baskets (rules §8) ---
    basket_min_signals: int = Field(3, ge=1)
    basket_neg_ratio: float = Field(0.6, gt=0, le=1)
    basket_mean_score: float = Field(-0.12, ge=-1, le=0)
    basket_consecutive_ticks: int = Field(2, ge=1)
    basket_signal_max_age_s: int = Field(300, ge=1)
    # two evaluations further apart than this are not "in a row" (an engine that was stopped): as long as a
    # member's score counts (BASKET_SIGNAL_MAX_AGE_S); ticks come every 30 s
    basket_streak_gap_s: int = Field(300, ge=1, le=3600)
    etf_lock_s: int = Field(90, ge=0)

    # --- risk (rules §7) ---
    risk_per_trade: float = Field(0.005, gt=0, le=1)
    max_concurrent_risk: float = Field(0.02, gt=0, le=1)
    daily_loss_limit: float = Field(0.02, gt=0, le=1)
    max_positions: int = Field(4, ge=1, le=1000)
    stop_loss_pct: float = Field(0.015, gt=0, lt=1)
    take_profit_pct: float = Field(0.03, gt=0, le=10)
    max_exposure: float = Field(0.8, gt=0, le=1)
    min_slots: int = Field(3, ge=1, le=1000)
    # an entry smaller than this fraction of a full position (what the risk rule and the slot allow) is not
    # opened: suppressed as risk_size_too_small instead of buying a token amount with the exposure left over
    min_position_fraction: float = Field(0.25, ge=0, le=1)

    # --- execution (rules §9) ---
    intent_ttl_s: int = Field(120, ge=1)
    # an approved buy is re-priced at the current price; it is refused when the price has fallen from the signal
    # by more than this (docs/rules.md §9: below the 1.5 % stop, so an approval never buys a failed signal)
    approval_max_move_pct: float = Field(0.01, gt=0, le=0.5)
    stop_check_interval_s: int = Field(300, ge=1)
    sim_start_cash: float = Field(100_000.0, gt=0)
    sim_slippage_bps: float = Field(2.0, ge=0, le=1000)
    sim_fee_per_order: float = Field(0.0, ge=0)
    sim_fee_per_share: float = Field(0.0, ge=0, le=100)  # on top of the order's fee (core.rules.fills.order_fee)
    sim_speed: float = Field(1.0, gt=0, le=3600)
    # first trading session of a new simulated market (YYYY-MM-DD; a weekend or holiday moves to the next
    # session). Unset: the session before today's date. Tests and demos fix it so a run never depends on the day.
    sim_start: date | None = None

    # --- app runtime (rules §12, 13) ---
    engine_jobs: bool = True  # 0: no background scheduler (tests tick the engine themselves)
    ui_refresh_s: float = Field(2.0, ge=0.5, le=60)

    # --- LLM and events (rules §6) ---
    llm_enabled: bool = False
    llm_min_signal_score: float = BY_SETTING["llm_min_signal_score"].field(0.7)
    llm_daily_limit: int = Field(120, ge=0)
    llm_cache_min: int = Field(30, ge=0)
    llm_monthly_budget: float = Field(80_000.0, ge=0)
    llm_budget_currency: str = "KRW"
    llm_mix_weight: float = Field(0.3, ge=0, le=1)
    vol_spike_event: float = Field(0.7, ge=0, le=1)
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(20.0, gt=0, le=300)
    llm_max_retries: int = Field(1, ge=0, le=10)
    llm_max_output_tokens: int = Field(200, ge=16, le=4096)
    llm_max_filing_chars: int = Field(6000, ge=200, le=100_000)  # filing text is untrusted: cut before sending
    # price per 1,000 tokens in LLM_BUDGET_CURRENCY (defaults: gpt-4o-mini at about 1,400 KRW/USD)
    llm_price_input_per_1k: float = Field(0.21, ge=0)
    llm_price_output_per_1k: float = Field(0.84, ge=0)
    edgar_enabled: bool = False
    edgar_user_agent: str = "TieredTrader research (set EDGAR_USER_AGENT to 'name email')"
    edgar_base_url: str = "https://data.sec.gov"
    edgar_archives_url: str = "https://www.sec.gov"
    edgar_poll_s: int = Field(120, ge=10, le=86_400)
    edgar_max_rps: float = Field(10.0, gt=0, le=10)  # SEC's fair-access limit
    edgar_forms: str = "8-K,10-Q,10-K,4,S-1"  # watched form types, comma-separated
    event_ttl_s: int = Field(1800, ge=60)  # how long an unprocessed filing keeps its ticker eligible

    # --- notifications (issue 7; core/services/slack.py) ---
    slack_webhook_url: SecretStr | None = None
    slack_timeout_s: float = Field(3.0, gt=0, le=60)
    slack_retries: int = Field(3, ge=0, le=10)

    # --- profiles and protections (rules §10; core/rules/protections.py) ---
    relaxed_sessions: int = Field(2, ge=1, le=MAX_RELAXED_SESSIONS)
    protection_cutoff_step: float = Field(0.01, gt=0, le=0.5)  # how far one firing moves the delta toward 0
    protection_llm_surge_per_hour: float = Field(30.0, gt=0)
    protection_stoploss_count: int = Field(3, ge=1)
    protection_stoploss_window_s: int = Field(3600, ge=60)
    protection_stoploss_pause_s: int = Field(1800, ge=60)
    protection_max_drawdown: float = Field(0.05, gt=0, le=1)  # on account equity, not summed trade returns
    protection_drawdown_window_s: int = Field(86_400, ge=300)
    protection_drawdown_pause_s: int = Field(7200, ge=60)
    protection_symbol_cooldown_s: int = Field(900, ge=0)  # no re-entry into a symbol this soon after a loss

    # --- KPIs and the paper evaluation (rules §11; core/metrics/kpi.py, core/research/evaluation.py) ---
    kpi_horizon_s: int = Field(1800, ge=60, le=86_400)  # MAE/MFE of an actionable signal over this long
    kpi_strong_margin: float = Field(0.2, ge=0, le=1)  # strong signal: |score| >= cutoff + this
    # the log's plan: 2 relaxed sessions, then 3 default ones; all passing sessions early -> cut over sooner
    eval_relaxed_sessions: int = Field(2, ge=0, le=20)
    eval_default_sessions: int = Field(3, ge=1, le=20)
    eval_early_cutover_sessions: int = Field(3, ge=1, le=40)
    eval_min_actionable: int = Field(5, ge=0)  # per session: enough evidence to judge it
    eval_max_stop_out_rate: float = Field(0.40, ge=0, le=1)
    eval_max_flip_flop_rate: float = Field(0.25, ge=0, le=1)
    eval_max_tier_a_overflow: float = Field(0.15, ge=0, le=1)  # the worst minute's Tier-A overflow
    eval_max_drawdown: float = Field(0.02, gt=0, le=1)  # on account equity inside the session
    eval_min_profit_factor: float = Field(0.0, ge=0)  # 0 = not judged (few trades make it noisy)

    # --- real adapters (later issues) ---
    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    alpaca_paper: bool = True
    # live money needs a second, explicit setting on top of ALPACA_PAPER=0
    alpaca_live_trading: str | None = None
    # the app's own password gate (ui/auth.py): required before Streamlit listens beyond loopback
    app_password: SecretStr | None = None
    # the first lockout after APP_LOGIN_MAX_TRIES wrong passwords from one address; it doubles with each further one
    app_login_lockout_s: float = Field(30.0, ge=1, le=3600)
    alpaca_base_url: str | None = None  # url_override of the trading API (tests point it at 127.0.0.1)
    alpaca_data_url: str | None = None  # url_override of the market-data API
    alpaca_feed: Literal["iex", "sip"] = "iex"
    alpaca_timeout_s: float = Field(5.0, gt=0, le=60)
    alpaca_max_retries: int = Field(2, ge=0, le=10)
    alpaca_requests_per_min: int = Field(190, ge=1, le=200)  # Alpaca allows 200; keep headroom
    alpaca_bar_grace_s: float = Field(5.0, ge=0, le=59)  # wait this long after a minute before asking for its bar
    alpaca_cache_dir: str = "data/cache/alpaca"  # Parquet history for research replays
    # scored research feeds (bars and scores as .npy files, core/research/feed_cache.py); 0 MB: no cache
    feed_cache_dir: str = "data/cache/feeds"
    feed_cache_mb: int = Field(2048, ge=0, le=1_048_576)
    redis_url: SecretStr | None = None  # set: token buckets, TTL keys and the signal stream are shared in Redis
    redis_group: str = Field("engine", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # one consumer group per account engine
    redis_claim_idle_s: float = Field(30.0, ge=1, le=3600)  # a consumer silent this long loses its pending signals
    redis_timeout_s: float = Field(0.5, gt=0, le=30)
    # the shared secret that signs every signal-stream message (HMAC-SHA256): unsigned or mis-signed ones are dropped;
    # without it the engine shares buckets and locks through Redis but decides its own signals in-process
    redis_signing_key: SecretStr | None = None
    # a stream message whose close differs from this engine's own bar by more than this fraction is refused
    redis_price_tolerance: float = Field(0.005, gt=0, le=0.5)
    # set: research sweeps run as tasks on this Dask scheduler (core/research/cluster.py); unset: local processes
    dask_scheduler: str | None = None
    dask_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    # 1: a Redis or Dask address beyond this machine without TLS (or Redis without a password) is accepted,
    # with a warning on every page; 0: refused at start-up (issue 30)
    allow_insecure_network: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_inline_comments(cls, data: Any) -> Any:
        # A '#' inside a plain value is almost always an inline comment that a .env parser kept (a quoted
        # "6  # Tier A", an environment file that does not strip comments). A secret may hold a '#' (a generated
        # password, a key): there only the comment's form, whitespace then '#', is refused.
        if isinstance(data, dict):
            secret = secret_fields()
            for key, value in data.items():
                if not isinstance(value, str) or "#" not in value or key.lower() in {"baskets_json"}:
                    continue
                if key.lower() in secret:
                    if _COMMENT.search(value):
                        raise ValueError(f"__field__{key}__inline comment (whitespace then '#') in the value: "
                                         f"keep only the secret (a '#' inside it is fine)")
                    continue
                raise ValueError(f"__field__{key}__inline comment ('#') in the value")
        return data

    @field_validator("db_path", "strategy", "alpaca_cache_dir", "feed_cache_dir", "llm_model", "edgar_base_url",
                     "edgar_archives_url", "edgar_user_agent")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        # DB_PATH= (empty) opened a throw-away temporary database; the others fail later, far from the cause
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("dask_scheduler")
    @classmethod
    def _dask_address(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None  # DASK_SCHEDULER= (empty) means no cluster, as when it is unset
        return check_scheduler_address(v)

    @field_validator("sim_start")
    @classmethod
    def _sim_start_in_calendar(cls, v: date | None) -> date | None:
        from core.clock import CALENDAR_END, CALENDAR_START

        # the day before is warm-up history, so the first session needs one session before it
        if v is not None and not (CALENDAR_START < v <= CALENDAR_END):
            raise ValueError(f"must be a date after {CALENDAR_START} and on or before {CALENDAR_END}")
        return v

    @field_validator("tier_a_tickers", "tier_b_tickers", "bench_tickers")
    @classmethod
    def _tickers(cls, v: str) -> str:
        parse_tickers(v)
        return v

    @field_validator("baskets_json")
    @classmethod
    def _baskets(cls, v: str) -> str:
        parse_baskets(v)
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        seen: dict[str, str] = {}
        for tier, raw in (("TIER_A_TICKERS", self.tier_a_tickers), ("TIER_B_TICKERS", self.tier_b_tickers),
                          ("BENCH_TICKERS", self.bench_tickers)):
            for t in parse_tickers(raw):
                if t in seen:
                    raise ValueError(f"__field__{tier.lower()}__{t} is already in {seen[t]}")
                seen[t] = tier
        if self.max_concurrent_risk < self.risk_per_trade:
            raise ValueError(f"__line__{_risk_pair_line(self)}")
        if self.market_data == "replay" and not (self.bars_file or "").strip():
            # refused here, with the other settings, not later when the runtime builds its market
            raise ValueError("__line__MARKET_DATA=replay needs BARS_FILE (a CSV or Parquet file of bars to replay), "
                             "and BARS_FILE is not set: set BARS_FILE=path/to/bars.csv or choose "
                             "MARKET_DATA=synthetic")
        if self.broker == "alpaca" or self.market_data == "alpaca":
            for name in ("alpaca_api_key", "alpaca_secret_key"):
                if getattr(self, name) is None or not getattr(self, name).get_secret_value().strip():
                    raise ValueError(f"__field__{name}__is required when BROKER or MARKET_DATA is alpaca")
        if self.edgar_enabled and "@" not in self.edgar_user_agent:
            raise ValueError("__field__edgar_user_agent__SEC requires a User-Agent naming you and an email address "
                             "(e.g. 'Jane Doe jane@example.com')")
        if self.llm_enabled and self.openai_api_key is None and not self.llm_base_url:
            raise ValueError("__field__openai_api_key__is required when LLM_ENABLED=1 (or set LLM_BASE_URL to a "
                             "local OpenAI-compatible server)")
        if self.broker == "alpaca" and not self.alpaca_paper and self.alpaca_live_trading != LIVE_TRADING_ACK:
            raise ValueError(f"__field__alpaca_live_trading__ALPACA_PAPER=0 trades real money: also set "
                             f"ALPACA_LIVE_TRADING={LIVE_TRADING_ACK}")
        # Redis and Dask beyond this machine carry orders' state and research code: encrypted and authenticated,
        # or explicitly accepted as insecure (then the sidebar says so on every page)
        for name, problem, fix in [] if self.allow_insecure_network else network_problems(self):
            raise ValueError(f"__field__{name}__{problem}: {fix}, or set ALLOW_INSECURE_NETWORK=1 to accept it "
                             f"(a private network you trust)")
        return self

    @property
    def edgar_form_list(self) -> tuple[str, ...]:
        return tuple(f.strip().upper() for f in self.edgar_forms.split(",") if f.strip())

    @property
    def universe(self) -> Universe:
        return Universe(
            tiers={"A": parse_tickers(self.tier_a_tickers), "B": parse_tickers(self.tier_b_tickers),
                   "Bench": parse_tickers(self.bench_tickers)},
            baskets=parse_baskets(self.baskets_json),
            tier_intervals_s={"A": self.tier_a_interval_s, "B": self.tier_b_interval_s},
        )

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict with every secret masked (safe to log or show)."""
        out = {}
        for name, value in self.model_dump().items():
            if isinstance(getattr(self, name), SecretStr):
                out[name] = "********"
            else:
                out[name] = value
        return out


_COMMENT = re.compile(r"\s#")


def secret_fields() -> frozenset[str]:
    """The names of the settings that hold a secret (typed SecretStr)."""
    return frozenset(name for name, f in Settings.model_fields.items()
                     if f.annotation is SecretStr or SecretStr in get_args(f.annotation))


def _loopback_host(host: str | None) -> bool:
    h = (host or "").strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def network_problems(s: Settings) -> list[tuple[str, str, str]]:
    """(setting, what is wrong, how to fix it) for each network link that leaves this machine unencrypted or
    unauthenticated (a Redis or Dask address that is not loopback)."""
    from urllib.parse import parse_qs, urlsplit

    out: list[tuple[str, str, str]] = []
    raw = s.redis_url.get_secret_value().strip() if s.redis_url is not None else ""
    if raw:
        try:
            u = urlsplit(raw)
            host, scheme = u.hostname, u.scheme.lower()
            password = u.password or parse_qs(u.query).get("password", [""])[0]
        except ValueError:
            host, scheme, password = None, "", ""
        if scheme in ("redis", "rediss") and not _loopback_host(host):  # unix://: a local socket
            missing = [w for w, bad in (("TLS (rediss://)", scheme != "rediss"), ("password", not password)) if bad]
            if missing:
                out.append(("redis_url", f"Redis at {host or '?'} is not this machine and has no "
                                         f"{' and no '.join(missing)}",
                            f"use rediss://:PASSWORD@{host or 'HOST'}:6380/0"))
    if s.dask_scheduler:
        m = _SCHEDULER.match(s.dask_scheduler)
        if m and m.group(1) != "tls" and not _loopback_host(m.group(2)):
            out.append(("dask_scheduler", f"the Dask scheduler at {m.group(2)} is not this machine and tcp:// is "
                                          f"neither encrypted nor authenticated",
                        "use tls:// with Dask's TLS settings"))
    return out


def insecure_network_warnings(s: Settings) -> list[str]:
    """What the sidebar warns about when ALLOW_INSECURE_NETWORK=1 let an insecure link through."""
    if not s.allow_insecure_network:
        return []
    return [f"{name.upper()}: {why} (accepted by ALLOW_INSECURE_NETWORK=1)" for name, why, _fix in network_problems(s)]


_SCHEDULER = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_scheduler_address(address: str) -> str:
    """A Dask scheduler address as ``tcp://host:port`` (or ``tls://``): a bare ``host:port`` or a missing port
    would otherwise fail only at connect time, as a timeout far from the typo."""
    a = address.strip()
    m = _SCHEDULER.match(a)
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise ValueError("expected tcp://host:port (e.g. tcp://10.0.0.5:8786, the address `dask scheduler` prints)")
    return a


def parse_tickers(raw: str) -> tuple[str, ...]:
    items = tuple(x.strip().upper() for x in raw.split(",") if x.strip())
    for t in items:
        if not _TICKER.match(t):
            raise ValueError(f"bad ticker {t!r}")
    if len(set(items)) != len(items):
        raise ValueError("duplicate ticker")
    return items


def parse_baskets(raw: str) -> tuple[Basket, ...]:
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of baskets")
    out = []
    for b in items:
        if not isinstance(b, dict):
            raise ValueError(f"basket entry {b!r} is not an object")
        try:
            basket = Basket(
                name=_text(b["name"], "name"),
                members=parse_tickers(",".join(_texts(b["members"], "members"))),
                inverse_etf=parse_tickers(_text(b["inverse_etf"], "inverse_etf"))[0],
                conflicts=parse_tickers(",".join(_texts(b.get("conflicts", []), "conflicts"))),
                index_etf=parse_tickers(_text(b.get("index_etf", b["conflicts"][0]), "index_etf"))[0],
            )
        except KeyError as e:
            raise ValueError(f"basket entry {b!r} lacks {e}") from None
        except (TypeError, IndexError) as e:
            raise ValueError(f"basket entry {b!r}: {e}") from None
        out.append(basket)
    return tuple(out)


def _text(value: Any, key: str) -> str:
    # a number or null where a ticker belongs used to escape as AttributeError from str.split
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _texts(value: Any, key: str) -> list[str]:
    # a dict here was silently read as its keys, a string as its letters
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TypeError(f"{key} must be a list of strings")
    return value


def _risk_pair_line(s: Settings) -> str:
    """RISK_PER_TRADE above MAX_CONCURRENT_RISK, said from the side the user set (both values shown)."""
    risk, cap = f"RISK_PER_TRADE={s.risk_per_trade:g}", f"MAX_CONCURRENT_RISK={s.max_concurrent_risk:g}"
    why = "one trade cannot risk more than all open trades together"
    if "max_concurrent_risk" in s.model_fields_set and "risk_per_trade" not in s.model_fields_set:
        return f"{cap} is below {risk}: {why}"
    return f"{risk} is above {cap}: {why}"


def _env_name(loc: tuple[Any, ...]) -> str:
    return str(loc[0]).upper() if loc else "SETTINGS"


# The CLI's short names (``--set cooldown=60``, ``--sweep delta=...``): the same for --set and --sweep.
SETTING_ALIASES: dict[str, str] = {"cooldown": "mixer_cooldown_s", "cooldown_s": "mixer_cooldown_s",
                                   "delta": "cutoff_delta"}

# Names the project reads from the process environment itself, outside Settings (before settings exist, or in
# worker processes): a .env line cannot set them, so one there is refused with where it belongs instead.
ENVIRONMENT_ONLY: dict[str, str] = {
    "RESEARCH_WARM_UP": "the switch of the app's background compile of the research kernel",
    "KERNEL_CACHE_DIR": "the folder of the compiled research kernel",
}


def _nearest(name: str, candidates: list[str]) -> str:
    near = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not near:
        return " (README, Configuration, lists the settings)"
    return "; did you mean " + (near[0] if len(near) == 1 else f"{', '.join(near[:-1])} or {near[-1]}") + "?"


def unknown_setting_message(name: str, *, aliases: bool = False) -> str:
    """'NAME is not a setting; did you mean ...?' with the nearest real names, written in the case ``name`` was
    (upper: the variables' form; lower: the CLI's)."""
    upper = name.upper() == name
    pool = [*Settings.model_fields, *(SETTING_ALIASES if aliases else ())]
    pool = [n.upper() for n in pool] if upper else pool
    return f"{name} is not a setting{_nearest(name if upper else name.lower(), pool)}"


def setting_name(name: str, *, aliases: bool = False) -> str:
    """The Settings field ``name`` means (any case; with ``aliases``, the CLI's short names too); ConfigError
    naming the nearest real names when there is none."""
    key = name.strip().lower()
    if aliases:
        key = SETTING_ALIASES.get(key, key)
    if key not in Settings.model_fields:
        raise ConfigError(unknown_setting_message(name.strip(), aliases=aliases))
    return key


def env_file() -> str:
    """The ``.env`` file Settings reads (relative to the working directory, as pydantic-settings opens it)."""
    return str(Settings.model_config.get("env_file") or ".env")


def dotenv_keys(path: str | None = None) -> dict[str, str | None]:
    """The keys and values written in ``.env`` (none when there is no such file)."""
    from dotenv import dotenv_values

    path = path or env_file()
    return dict(dotenv_values(path)) if os.path.isfile(path) else {}


def dotenv_problems(path: str | None = None) -> list[str]:
    """One line per ``.env`` key that is not a setting. Environment variables are not checked: they are shared
    with every other program, and only the settings' own names are read from them."""
    out = []
    for key in dotenv_keys(path):
        if key.lower() in Settings.model_fields:
            continue
        if key.upper() in ENVIRONMENT_ONLY:
            out.append(f"{key} in .env is not read: {ENVIRONMENT_ONLY[key.upper()]} comes from the process "
                       f"environment only; set it there (e.g. {key.upper()}=... make run)")
        else:
            out.append(unknown_setting_message(key).replace(" is not a setting", " in .env is not a setting", 1))
    return out


def configured_in(name: str, path: str | None = None) -> str | None:
    """Where setting ``name`` was given: "the environment" (which wins, as in Settings), ".env", or None (its
    default, or a keyword override)."""
    if any(k.lower() == name for k in os.environ):  # Settings matches names case-insensitively
        return "the environment"
    if any(k.lower() == name for k in dotenv_keys(path)):
        return ".env"
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; on any bad value raise ConfigError with one line per problem.

    The line names the variable and the value, never a secret's value. A ``.env`` key that is not a setting is
    refused first (it used to be ignored: ``MIXER_COOLDOWN_SECS=60`` ran with the default 180 s).
    """
    # pydantic-settings' own ``_env_file=`` (a path, several, or None for none) is checked the same way
    files = overrides["_env_file"] if "_env_file" in overrides else env_file()
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files or ())
    unknown = [line for f in files for line in dotenv_problems(str(f))]
    if unknown:
        raise ConfigError("; ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = str(err.get("msg", ""))
            name = _env_name(err.get("loc", ()))
            value = err.get("input")
            line = re.search(r"__line__(.*)$", msg)
            if line:  # a rule between settings: the validator wrote the whole line, naming every variable
                lines.append(line.group(1))
                continue
            m = re.search(r"__field__(\w+?)__(.*)$", msg)
            if m:  # raised by a model validator: it knows the field
                name, msg = m.group(1).upper(), m.group(2)
                # a model validator's input is every value as written (environment, .env, overrides merged)
                value = value[m.group(1)] if isinstance(value, dict) and m.group(1) in value else \
                    _raw_value(overrides, m.group(1), value)
            if isinstance(value, dict):
                value = _raw_value(overrides, name.lower(), None)
            secret = any(s in name for s in ("KEY", "SECRET", "TOKEN_", "REDIS_URL", "WEBHOOK", "PASSWORD"))
            shown = "********" if secret else _shown(value)
            lines.append(f"{name}={shown}: {msg.removeprefix('Value error, ')}")
        raise ConfigError("; ".join(lines)) from None


def _shown(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past Python's 4300-digit limit cannot even be printed
        return f"<{type(value).__name__} too large to show>"


def _raw_value(overrides: dict[str, Any], field: str, default: Any) -> Any:
    if field in overrides:
        return overrides[field]
    for k, v in os.environ.items():
        if k.lower() == field:
            return v
    if default is None and field in Settings.model_fields:
        return Settings.model_fields[field].default
    return default


# --------------------------------------------------------------------------------------
# Live parameters: what the sliders and toggles change while the engine runs.


@dataclass(frozen=True)
class LiveParams:
    cutoff_delta: float
    cooldown_s: int
    direction_lock_s: int
    llm_min_signal_score: float
    reserve_fallback: bool
    auto_mode: bool
    paused: bool
    profile: str
    profile_sessions_left: int | None = None  # relaxed profile expiry, in trading sessions

    @classmethod
    def from_settings(cls, s: Settings) -> LiveParams:
        base = cls(
            cutoff_delta=s.cutoff_delta, cooldown_s=s.mixer_cooldown_s, direction_lock_s=s.direction_lock_s,
            llm_min_signal_score=s.llm_min_signal_score, reserve_fallback=s.reserve_fallback,
            auto_mode=s.auto_mode, paused=False, profile="default",
        )
        return apply_profile(base, s.profile, s.relaxed_sessions) if s.profile != "default" else base

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_changes(self, **changes: Any) -> LiveParams:
        return replace(self, **validate_param_changes(changes))


# the numeric live parameters' ranges: core/bounds.py's table, the same ranges as their Settings fields
LIVE_PARAM_LIMITS: dict[str, tuple[float, float]] = {name: (b.lo, b.hi) for name, b in BY_PARAM.items()}


def validate_param_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Coerce and range-check a change set; unknown names or bad values raise ConfigError."""
    known = {f.name: f for f in fields(LiveParams)}
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            raise ConfigError(f"{name}: not a live parameter")
        if name in ("reserve_fallback", "auto_mode", "paused"):
            if isinstance(value, str) and value.lower() in ("0", "1", "true", "false"):
                value = value.lower() in ("1", "true")
            elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
                value = bool(value)
            if not isinstance(value, bool):
                raise ConfigError(f"{name}={_shown(value)[:40]}: not a boolean (true/false)")
            out[name] = value
        elif name == "profile":
            if not isinstance(value, str) or value not in ("default", "relaxed"):
                raise ConfigError(f"profile={_shown(value)[:40]}: must be default or relaxed")
            out[name] = value
        elif name == "profile_sessions_left":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= MAX_RELAXED_SESSIONS):
                raise ConfigError(f"profile_sessions_left={_shown(value)[:40]}: a whole number of sessions from 0 "
                                  f"to {MAX_RELAXED_SESSIONS}, or null")
            out[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigError(f"{name}={_shown(value)[:40]}: not a number")
            try:
                num = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{name}={_shown(value)[:40]}: not a number") from None
            b = BY_PARAM[name]
            if math.isfinite(num):
                num = round(num, 6)  # as stored: a slider's 0.30000000000000004 is 0.3, inside a range ending there
            if not b.contains(num):
                raise ConfigError(f"{name}={value!r}: outside {b.label.lower()}'s range {b.range_text()} "
                                  f"(the same as {b.env}'s)")
            out[name] = int(num) if b.is_int else num
    return out


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "relaxed": {"cutoff_delta": -0.03, "cooldown_s": 120, "llm_min_signal_score": 0.6, "reserve_fallback": True},
}


def apply_profile(params: LiveParams, name: str, sessions: int | None = None) -> LiveParams:
    """Switch profile. ``default`` restores the given default values, ``relaxed`` loosens them for N sessions."""
    if name not in PROFILES:
        raise ConfigError(f"profile={name!r}: must be one of {', '.join(PROFILES)}")
    changes = dict(PROFILES[name])
    changes["profile"] = name
    changes["profile_sessions_left"] = sessions if name == "relaxed" else None
    return replace(params, **changes)
