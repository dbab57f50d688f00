"""Basket trigger (rules §8): individual stocks are evidence, short exposure is a basket trade.

A basket asks for its inverse ETF only when, over its members' latest scores (no older than
``basket_signal_max_age_s``): at least ``min_signals`` members reported, >= 60 % of them are negative, their mean is
<= -0.12, and this held on 2 consecutive evaluations **of the same session**: the streak starts again at each session
open and after a gap longer than ``basket_streak_gap_s`` between two evaluations (an engine that was stopped), so a
bearish tick at 15:59:30 and the next morning's first tick are not two in a row.
"""

from __future__ import annotations

import numpy as np


def basket_members(score_ts: np.ndarray, scores: np.ndarray, now: float, max_age_s: float) -> np.ndarray:
    """Which members count: a latest score no older than ``max_age_s`` (``score_ts`` NaN: never scored)."""
    return now - score_ts <= max_age_s


def basket_figures(scores: np.ndarray, counted: np.ndarray) -> tuple[int, float, float]:
    """(members reported, negative ratio, mean score) over the counted members, in member order."""
    n = 0
    neg = 0
    total = 0.0
    for i in range(len(scores)):
        if counted[i]:
            n += 1
            total += scores[i]
            if scores[i] < 0:
                neg += 1
    if n == 0:
        return 0, 0.0, 0.0
    return n, neg / n, total / n


def basket_condition(n: int, negative_ratio: float, mean_score: float, min_signals: float, neg_ratio: float,
                     mean_max: float) -> bool:
    return n >= min_signals and negative_ratio >= neg_ratio and mean_score <= mean_max


def basket_streak(previous: int, previous_ts: float, previous_session: int, condition: bool, now: float,
                  session: int, gap_s: float) -> int:
    """Consecutive evaluations the condition held, counting this one: a new session or a gap starts over."""
    if not condition:
        return 0
    if previous_session != session or not now - previous_ts <= gap_s:
        return 1
    return previous + 1


def basket_fires(condition: bool, streak: int, needed: float) -> bool:
    return condition and streak >= needed
