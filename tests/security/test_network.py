"""Network links (issue 30): Redis or Dask beyond this machine must be encrypted (and Redis authenticated), or
accepted explicitly with ALLOW_INSECURE_NETWORK=1, which the sidebar then warns about; and what a sweep sends to
Dask workers holds no secret (the tasks are pickled, sent over the network and kept in the workers' memory)."""

from __future__ import annotations

from datetime import date

import distributed
import pytest
import streamlit as st
from distributed.protocol.pickle import dumps as dask_dumps
from streamlit.testing.v1 import AppTest

from core.config import ConfigError, insecure_network_warnings, load_settings, secret_fields
from core.research.cluster import shipped_settings
from core.research.replay import run_sweep
from core.runtime import stop_all
from tests.test_app import APP

PW = "net-canary-pw-QzXw"
LAN = "192.0.2.10"  # TEST-NET-1: an address that is not this machine (nothing is sent to it)


REFUSED = [
    ({"redis_url": f"redis://{LAN}:6379/0"}, "REDIS_URL", "no TLS (rediss://) and no password"),
    ({"redis_url": f"redis://:{PW}@{LAN}:6379/0"}, "REDIS_URL", "no TLS (rediss://)"),
    ({"redis_url": f"redis://{LAN}:6379/0?password={PW}"}, "REDIS_URL", "no TLS (rediss://)"),
    ({"redis_url": f"rediss://{LAN}:6380/0"}, "REDIS_URL", "no password"),
    ({"redis_url": "redis://redis.internal:6379/0"}, "REDIS_URL", "no TLS"),
    ({"dask_scheduler": f"tcp://{LAN}:8786"}, "DASK_SCHEDULER", "neither encrypted nor authenticated"),
]
ACCEPTED = [
    {"redis_url": f"rediss://:{PW}@{LAN}:6380/0"},
    {"redis_url": f"rediss://{LAN}:6380/0?password={PW}"},
    {"redis_url": "redis://127.0.0.1:6379/0"},
    {"redis_url": "redis://localhost:6379/0"},
    {"redis_url": "unix:///run/redis.sock"},
    {"dask_scheduler": f"tls://{LAN}:8786"},
    {"dask_scheduler": "tcp://127.0.0.1:8786"},
]


def test_an_insecure_link_beyond_this_machine_is_refused_a_secure_or_local_one_accepted():
    for env, name, why in REFUSED:
        with pytest.raises(ConfigError) as e:
            load_settings(**env)
        text = str(e.value)
        assert text.startswith(f"{name}=") and why in text and "ALLOW_INSECURE_NETWORK=1" in text, text
        assert PW not in text and PW[-4:] not in text
    for env in ACCEPTED:
        assert insecure_network_warnings(load_settings(**env)) == [], env


def test_allow_insecure_network_accepts_it_and_every_page_warns(tmp_path, monkeypatch):
    s = load_settings(redis_url=f"redis://{LAN}:6379/0", dask_scheduler=f"tcp://{LAN}:8786",
                      allow_insecure_network=True)
    assert [w.split(":")[0] for w in insecure_network_warnings(s)] == ["REDIS_URL", "DASK_SCHEDULER"]
    # the page: a Dask scheduler is only contacted when a sweep runs, so the app starts without a network
    for k, v in {"DB_PATH": str(tmp_path / "app.db"), "ENGINE_JOBS": "0", "SIM_START": "2025-03-04",
                 "DASK_SCHEDULER": f"tcp://{LAN}:8786", "ALLOW_INSECURE_NETWORK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("APP_PASSWORD", raising=False)
    st.cache_resource.clear()
    stop_all()
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        for page in ("pages/live_signals.py", "pages/risk.py"):
            at.switch_page(page).run()
            warned = [w.value for w in at.sidebar.warning if "Insecure network link" in w.value]
            assert warned and f"DASK_SCHEDULER: the Dask scheduler at {LAN}" in warned[0], page
    finally:
        st.cache_resource.clear()
        stop_all()


CANARY_KEYS = {"OPENAI_API_KEY": "sk-canary-shipped-QzXw0099", "ALPACA_API_KEY": "PKCANARYSHIPQZXW",
               "ALPACA_SECRET_KEY": "alpaca-shipped-VwXyZq", "SLACK_WEBHOOK_URL": "https://hooks.example/hookQzXwYv",
               "APP_PASSWORD": "app-shipped-pw-QzXw", "REDIS_URL": f"redis://127.0.0.1:6379/0?password={PW}"}


def test_shipped_settings_hold_no_secret():
    s = load_settings(**{k.lower(): v for k, v in CANARY_KEYS.items()}, llm_enabled=True)
    shipped = shipped_settings(s)
    assert all(getattr(shipped, name) is None for name in secret_fields())
    assert shipped.llm_enabled and shipped.cutoff_delta == s.cutoff_delta


def test_the_tasks_sent_to_dask_workers_hold_no_secret(tmp_path, monkeypatch):
    """A real scheduler and worker on 127.0.0.1; every payload the client submits or scatters is pickled as Dask
    pickles it and searched for each canary secret and its tail."""
    from tests.test_dask_sweep import LocalDask, file_market

    for k, v in {**CANARY_KEYS, "LLM_ENABLED": "1"}.items():
        monkeypatch.setenv(k, v)
    sent: list[bytes] = []
    submit, scatter = distributed.Client.submit, distributed.Client.scatter

    def capture_submit(self, func, *args, **kw):
        sent.append(dask_dumps((func, args)))
        return submit(self, func, *args, **kw)

    def capture_scatter(self, data, *args, **kw):
        sent.append(dask_dumps(data))
        return scatter(self, data, *args, **kw)

    monkeypatch.setattr(distributed.Client, "submit", capture_submit)
    monkeypatch.setattr(distributed.Client, "scatter", capture_scatter)
    cluster = LocalDask(tmp_path)
    try:
        cluster.start()
        cluster.ensure_workers(1)
        grid = {"cutoff_delta": [-0.02, 0.02]}
        for market in (None, file_market(1)):  # regenerated on the worker; a file's bars scattered
            rows = run_sweep({"auto_mode": True}, grid, days=1, seed=7, start=date(2025, 3, 3), market=market,
                             cluster=cluster.address)
            assert len(rows) == 2 and rows.where.startswith("on the Dask cluster")
    finally:
        cluster.stop()
    assert len(sent) == 5  # two cells twice, one scattered feed
    payload = b"".join(sent)
    for value in CANARY_KEYS.values():
        for part in (value, PW, value[-8:]):
            assert part.encode() not in payload, part
