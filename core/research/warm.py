"""The research kernel ready before the first run: compiled (or loaded from its cache) by a one-session replay.

The app calls ``warm_up`` in the background when it starts; the Research page and the CLI call it, saying so, when
``kernel_ready`` is False (the first run after install).
"""

from __future__ import annotations

from core.research import kernel as kn


def kernel_ready() -> bool:
    """Whether this source's compiled kernel is in the cache already (a first run after install compiles it)."""
    d = kn.CACHE_DIR
    return d.exists() and any(d.rglob("*.nbi"))


WARM_UP_START = "2025-03-04"  # any past session: the warm-up replays one in memory


def warm_up() -> float:
    """Compile the kernel (or load it from the cache) by replaying one session of the synthetic market in memory,
    with the types every replay uses; the seconds it took. The app calls it in the background at start, so the
    first Research click finds it ready."""
    import time
    from datetime import date

    from core.config import Settings
    from core.research.replay import run_replay

    t0 = time.perf_counter()
    # no feed cache: a warm-up must not leave a day of bars in the user's cache folder
    run_replay(Settings(auto_mode=True, feed_cache_mb=0), days=1, seed=0, start=date.fromisoformat(WARM_UP_START),
               db_path=":memory:").store.close()
    return time.perf_counter() - t0
