"""A live session on the simulated market and broker, driven through the real ``Runtime`` with a clock the test moves
(issue 28): what the session-replay tests replay. Fixed dates, seeds and clocks; nothing waits on wall time."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from core.clock import UTC, SimClock, session_bounds
from core.config import load_settings
from core.runtime import Runtime

DAY = date(2025, 3, 5)  # a Wednesday; the session before it is the synthetic market's warm-up
TICK_S = 30


def ny(day: date, hh: int, mm: int) -> datetime:
    return session_bounds(day)[0].replace(hour=hh, minute=mm).astimezone(UTC)  # type: ignore[index]


class LiveSession:
    """One runtime on ``db``; ``tick_until`` runs the tick job every ``TICK_S`` market seconds and the stop-check job
    every 5 minutes, as the scheduler would; ``command`` is the sidebar or a page clicking."""

    def __init__(self, db: str, *, seed: int, day: date = DAY, **settings: Any) -> None:
        self.day = day
        self.settings = load_settings(_env_file=None, db_path=db, engine_jobs=False, seed=seed, sim_start=day,
                                      **settings)
        self.clock = SimClock(ny(day, 9, 31))
        self.rt = Runtime(self.settings, clock=self.clock, wall=lambda: self.clock.now().timestamp())

    def tick_until(self, hh: int, mm: int, *, each: Any = None, skip: tuple[datetime, datetime] | None = None) -> None:
        end = ny(self.day, hh, mm)
        while self.clock.now() < end:
            now = self.clock.now()
            if skip is None or not (skip[0] <= now < skip[1]):
                self.rt.run_tick()
                if (now - ny(self.day, 9, 30)).total_seconds() % 300 == 30:
                    self.rt.run_stop_checks()
                if each is not None:
                    each(self)
            self.clock.advance(TICK_S)

    def command(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.clock.advance(1)  # a click between two ticks
        return self.rt.send_command(kind, payload, who="trader")

    def pending(self) -> list[str]:
        return [r["id"] for r in self.rt.store.query("SELECT id FROM intents WHERE status='pending' ORDER BY id")]

    def held(self) -> list[str]:
        return [r["symbol"] for r in self.rt.store.query("SELECT symbol FROM positions WHERE qty > 0 ORDER BY symbol")]

    def stop(self) -> None:
        self.rt.stop()


def full_session(db: str, seed: int) -> dict[str, Any]:
    """Manual mode with an approval and a rejection, auto mode, a slider change, a cooldown change and a close."""
    s = LiveSession(db, seed=seed, cutoff_delta=-0.05)
    done: dict[str, Any] = {"approved": None, "rejected": None, "closed": None}

    def decide(sess: LiveSession) -> None:
        for iid in sess.pending():
            if done["approved"] is None:
                done["approved"] = iid
                sess.command("approve", {"intent_id": iid})
            elif done["rejected"] is None:
                done["rejected"] = iid
                sess.command("reject", {"intent_id": iid})

    try:
        s.tick_until(11, 0, each=decide)
        s.command("set_params", {"auto_mode": True})
        s.tick_until(12, 0)
        for v in (-0.06, -0.07, -0.08):  # slider steps, folded into one audit row
            s.command("set_params", {"cutoff_delta": v, "_source": "slider"})
        s.tick_until(13, 0)
        s.command("set_params", {"cooldown_s": 120})
        s.tick_until(14, 0)
        held = s.held()
        if held:
            done["closed"] = held[0]
            s.command("close_position", {"symbol": held[0]})
        s.tick_until(16, 0)
        s.clock.advance(0)
    finally:
        s.stop()
    return done






def main(argv: list[str]) -> int:
    """``python -m tests.session_live DB SEED FROM TO [KILL_AT]``: run the tick job from FROM to TO (New York HH:MM,
    auto mode); with KILL_AT the process SIGKILLs itself right after that tick (a real kill -9 at a fixed point)."""
    import os
    import signal

    db, seed, start, end = argv[0], int(argv[1]), argv[2], argv[3]
    kill_at = argv[4] if len(argv) > 4 else None
    s = LiveSession(db, seed=seed, cutoff_delta=-0.05, auto_mode=True)
    h, m = (int(x) for x in start.split(":"))
    s.clock.set(ny(s.day, h, m))

    def maybe_die(sess: LiveSession) -> None:
        if kill_at is not None and sess.clock.now() >= ny(sess.day, *(int(x) for x in kill_at.split(":"))):
            os.kill(os.getpid(), signal.SIGKILL)

    h, m = (int(x) for x in end.split(":"))
    s.tick_until(h, m, each=maybe_die)
    s.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
