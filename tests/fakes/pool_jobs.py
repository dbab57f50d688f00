"""Jobs for the worker-pool tests: importable, so spawned workers can run them."""

from __future__ import annotations

import os

TAG = "unset"


def set_tag(tag: str) -> None:
    global TAG
    TAG = tag


def tag_and_pid(job: int) -> tuple[str, int, int]:
    return TAG, os.getpid(), job
