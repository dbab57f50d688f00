"""Jobs for the worker-pool tests: importable, so spawned workers can run them."""

from __future__ import annotations

import os
from typing import Any

TAG = "unset"


def set_tag(tag: str) -> None:
    global TAG
    TAG = tag


def tag_and_pid(job: int) -> tuple[str, int, int]:
    return TAG, os.getpid(), job


def record_pools(monkeypatch: Any, module: Any) -> list[Any]:
    """Every ``WorkerPool`` that ``module`` makes from now on, for a test to count the processes each spawned."""
    pools: list[Any] = []

    class Recorded(module.WorkerPool):  # type: ignore[name-defined,misc]
        def __init__(self, workers: int) -> None:
            super().__init__(workers)
            pools.append(self)

    monkeypatch.setattr(module, "WorkerPool", Recorded)
    return pools
