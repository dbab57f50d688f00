"""Is this a CI run? There a missing tool (Chromium, Playwright, redis-server) fails a test instead of skipping it."""

from __future__ import annotations

import os


def ci_required() -> bool:
    """``CI`` set to any true value: ``true``, ``1``, ``yes``, ``on`` (any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
