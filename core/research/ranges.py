"""The date range of a research run, checked before anything runs.

``resolve_range(start, end, today=...)`` turns what a person typed into the NYSE sessions a replay uses, with
notes for every adjustment and a ``RangeError`` (our words, never the calendar library's) for what cannot run:

* a start on a weekend or holiday moves to the next session, an end on one back to the previous session
  (each with a note saying so);
* an end before the start, a date after ``today``, a date outside the exchange calendar we load
  (``core.clock.CALENDAR_START``..``CALENDAR_END``) or a range without a session is refused;
* with ``data_sessions`` (the sessions a bars file or a download holds), a range reaching before the data's first
  session or after its last is refused naming the data's span; sessions of the range the data lacks are
  left out, with a note;
* more than ``max_sessions`` sessions (default ``MAX_SESSIONS``, the Research page's and the CLI's one limit) is
  refused naming both numbers (``check_length``).

``resolve_days(start, days, ...)`` is the CLI's ``--days``: the range those sessions span, resolved by
``resolve_range`` (so a future start, a holiday start's move and the limit are what the page says too).

``today`` is a parameter: the caller reads the wall clock once (core logic never does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from core.clock import (
    CALENDAR_END,
    CALENDAR_START,
    next_session_on_or_after,
    previous_session,
    session_bounds,
    sessions_between,
)

# The most sessions a research run takes, on the Research page and in the CLI (python -m core.research) alike:
# five years. A replay holds its scored feed in memory: a trading replay of five years of the 13 default symbols
# peaked at 1,017 MB RSS with the feed scored in the process and 796 MB with it read from the feed cache, about
# 200 and 160 MB a year of data (a single year: 336 and 249 MB); README, Benchmarks.
MAX_SESSIONS = 1260


class RangeError(ValueError):
    """A research range that cannot run; the message says why in the user's terms."""


def _weekday(day: date) -> str:
    name = day.strftime("%A")
    return name if day.weekday() >= 5 else f"{name}, a market holiday"


def _is_session(day: date) -> bool:
    return session_bounds(day) is not None


def resolve_range(start: date, end: date, *, today: date, data_sessions: Sequence[date] | None = None,
                  max_sessions: int | None = MAX_SESSIONS) -> tuple[list[date], list[str]]:
    """(sessions in [start, end], notes); see the module docstring for the rules. ``max_sessions`` None: no
    limit."""
    if end < start:
        raise RangeError(f"the end {end} is before the start {start}")
    for day in (start, end):
        if day > today:
            raise RangeError(f"{day} is in the future (today is {today})")
    for day in (start, end):
        if day < CALENDAR_START or day > CALENDAR_END:
            raise RangeError(f"{day} is outside the exchange calendar ({CALENDAR_START}..{CALENDAR_END})")
    sessions = sessions_between(start, end)
    if not sessions:
        raise RangeError(f"no trading session between {start} and {end}")
    notes: list[str] = []
    if not _is_session(start):
        first = next_session_on_or_after(start)
        notes.append(f"{start} is not a trading day ({_weekday(start)}): the run starts at the next session, {first}")
    if not _is_session(end):
        last = previous_session(end)  # on or before a non-session day
        notes.append(f"{end} is not a trading day ({_weekday(end)}): the run ends at the previous session, {last}")
    if data_sessions is not None:
        sessions = _within_data(sessions, sorted(set(data_sessions)), notes)
    check_length(sessions, max_sessions)
    return sessions, notes


def resolve_days(start: date, days: int, *, today: date, data_sessions: Sequence[date] | None = None,
                 max_sessions: int | None = MAX_SESSIONS) -> tuple[list[date], list[str]]:
    """``days`` sessions from ``start`` (the CLI's ``--days``), resolved by ``resolve_range`` over the range they
    span: the same refusals (a future date, the limit), and the same note when ``start`` is no session. With
    ``data_sessions``, the count is of the data's sessions."""
    if days < 1:
        raise RangeError(f"{days} sessions: a run needs at least one")
    if start < CALENDAR_START or start > CALENDAR_END:
        raise RangeError(f"{start} is outside the exchange calendar ({CALENDAR_START}..{CALENDAR_END})")
    if data_sessions is not None:
        have = sorted(set(data_sessions))
        picked = [d for d in have if d >= start][:days]
        if not picked:
            span = f"{have[0]}..{have[-1]}" if have else "no session"
            raise RangeError(f"the data covers {span}: nothing on or after {start}")
    else:
        picked = sessions_between(start, CALENDAR_END)[:days]
        if len(picked) < days:  # runs past the calendar we load (and so into the future, and past any limit)
            if max_sessions is not None and days > max_sessions:
                raise RangeError(f"{days} sessions from {start} are more than the {max_sessions} a run takes")
            raise RangeError(f"only {len(picked)} sessions from {start} to the calendar's end, {CALENDAR_END}: "
                             f"{days} asked")
    sessions, notes = resolve_range(start, picked[-1], today=today, data_sessions=data_sessions,
                                    max_sessions=max_sessions)
    if len(sessions) < days:  # a file that ends sooner: it replays what it has, and says so
        notes.append(f"the data has {len(sessions)} session(s) from {sessions[0]} on, not {days}: the run replays "
                     f"{sessions[0]}..{sessions[-1]}")
    return sessions, notes


def check_length(sessions: Sequence[date], max_sessions: int | None = MAX_SESSIONS) -> None:
    """Refuse more than ``max_sessions`` sessions, naming both numbers (the CLI's ``--days`` is checked here too)."""
    if max_sessions is not None and len(sessions) > max_sessions:
        raise RangeError(f"{sessions[0]}..{sessions[-1]} has {len(sessions)} sessions, more than the "
                         f"{max_sessions} a run takes")


def _within_data(sessions: list[date], data: list[date], notes: list[str]) -> list[date]:
    if not data:
        raise RangeError("the data holds no session")
    span = f"the data covers {data[0]}..{data[-1]}"
    if sessions[0] < data[0]:
        raise RangeError(f"{span}: the range starts at {sessions[0]}, before its first session")
    if sessions[-1] > data[-1]:
        raise RangeError(f"{span}: the range ends at {sessions[-1]}, after its last session")
    have = set(data)
    kept = [d for d in sessions if d in have]
    missing = [d for d in sessions if d not in have]
    if not kept:
        raise RangeError(f"{span}, but has no bars on any session of {sessions[0]}..{sessions[-1]}")
    if missing:
        shown = ", ".join(str(d) for d in missing[:3]) + (", ..." if len(missing) > 3 else "")
        notes.append(f"the data has no bars on {len(missing)} session(s) of the range ({shown}): they are skipped")
    return kept
