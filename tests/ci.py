"""Is this a CI run? There a missing tool (Chromium, Playwright, redis-server) fails a test instead of skipping it."""

from __future__ import annotations

import os


def ci_required() -> bool:
    """``CI`` set to any true value: ``true``, ``1``, ``yes``, ``on`` (any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def real_clock_env() -> dict[str, str]:
    """This environment without a preloaded libfaketime (``make test-dates``), for the third-party servers a test
    starts (redis-server, Chromium): the date move is for our code; libfaketime inside those programs breaks
    their own timers, which would say nothing about this project."""
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"):
        env.pop(name, None)
    return env
