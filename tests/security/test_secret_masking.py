"""One masking function (core/secrets.py) for every URL and provider error text shown, stored or logged, and
secrets that hold a '#' (issue 30)."""

from __future__ import annotations

import logging

import pytest

from core.config import ConfigError, load_settings
from core.secrets import mask_secrets, redact_url
from core.services.redis_link import RedisLink

PW = "qp-canary-Zx9w"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{PW}@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
    (f"rediss://app:{PW}@10.0.0.5:6380/0", "rediss://app:***@10.0.0.5:6380/0"),
    (f"redis://127.0.0.1:6379/0?password={PW}", "redis://127.0.0.1:6379/0?password=***"),
    (f"redis://h:1/0?db=2&token={PW}&socket_timeout=1", "redis://h:1/0?db=2&token=***&socket_timeout=1"),
    (f"https://api.example.com/v1?api_key={PW}&q=1", "https://api.example.com/v1?api_key=***&q=1"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_a_url_loses_its_password_and_credential_parameters(url, shown):
    assert redact_url(url) == shown
    assert PW not in mask_secrets(f"connecting to {url} failed")


def test_a_provider_error_loses_every_part_of_the_key_it_echoes():
    key = "sk-proj-canaryKEY0011QzXw"
    s = load_settings(openai_api_key=key, llm_enabled=True)
    echo = (f"Error code: 401 - {{'error': {{'message': 'Incorrect API key provided: {key[:8]}*************"
            f"{key[-4:]}. You can find your API key at https://platform.openai.com/account/api-keys.'}}}}")
    out = mask_secrets(f"AuthenticationError: {echo} (sent {key}, tail ...{key[-4:]})", s)
    assert key not in out and key[-4:] not in out and key[:8] not in out
    assert out.startswith("AuthenticationError: Error code: 401") and "api-keys" in out
    # any other key-shaped token, configured or not
    assert "sk-other" not in mask_secrets("retry with sk-otherkey123456789")


def test_every_configured_secret_is_masked_in_free_text():
    s = load_settings(app_password="hunter2-canary-pw", slack_webhook_url="https://hooks.example/T0/B0/hookQzXw",
                      alpaca_api_key="PKCANARYQZXWVU", alpaca_secret_key="sekret-canary-VwXy",
                      redis_url=f"redis://127.0.0.1:6379/0?password={PW}")
    text = ("hunter2-canary-pw; posted to https://hooks.example/T0/B0/hookQzXw; PKCANARYQZXWVU sekret-canary-VwXy "
            f"and the Redis password {PW} alone")
    out = mask_secrets(text, s)
    for secret in ("hunter2-canary-pw", "hookQzXw", "PKCANARYQZXWVU", "sekret-canary-VwXy", PW, PW[-4:]):
        assert secret not in out, (secret, out)


def test_the_redis_status_and_its_log_lines_mask_a_password_in_the_query(caplog):
    caplog.set_level(logging.DEBUG)
    # a port nothing listens on (the 0 port cannot be connected to): the link fails over and says so
    link = RedisLink(f"redis://127.0.0.1:1/0?password={PW}", socket_timeout_s=0.2)
    assert link.run(lambda c: c.ping(), lambda: "local") == "local"
    status = link.status()
    assert status["url"] == "redis://127.0.0.1:1/0?password=***" and not status["up"]
    assert PW not in str(status) and PW not in caplog.text and PW[-4:] not in caplog.text


ENV = """\
APP_PASSWORD="pa#ss phrase#with hashes#"
OPENAI_API_KEY="sk-ab#cd#QzXw"
REDIS_URL='redis://127.0.0.1:6379/0?password=p%23w#frag'
ALPACA_SECRET_KEY=abc#def
TIER_B_TOKENS=4  # an inline comment python-dotenv drops
"""


REFUSED = [
    ('TIER_A_TOKENS="6  # Tier A"', "TIER_A_TOKENS='6  # Tier A'"),  # a plain value: any '#' is a comment
    ('LLM_MODEL="gpt#4"', "LLM_MODEL='gpt#4'"),
    ('OPENAI_API_KEY="sk-canary-hash-QzXw  # my key"', "OPENAI_API_KEY=********"),  # a key has no spaces
    ('REDIS_URL="redis://127.0.0.1:6379/0 # local"', "REDIS_URL=********"),
    ('APP_PASSWORD="canary-hash-pw  # the password"', "APP_PASSWORD=********"),
]


def test_secrets_may_hold_a_hash_but_the_inline_comment_form_is_refused(tmp_path):
    env = tmp_path / ".env"
    env.write_text(ENV)
    s = load_settings(_env_file=str(env))
    assert s.app_password.get_secret_value() == "pa#ss phrase#with hashes#"
    assert s.openai_api_key.get_secret_value() == "sk-ab#cd#QzXw"
    assert s.alpaca_secret_key.get_secret_value() == "abc#def"
    assert s.redis_url.get_secret_value().endswith("#frag") and s.tier_b_tokens == 4
    for line, name in REFUSED:
        env.write_text(line + "\n")
        with pytest.raises(ConfigError) as e:
            load_settings(_env_file=str(env))
        assert str(e.value).startswith(f"{name}: inline comment"), line
        assert "canary-hash" not in str(e.value)
