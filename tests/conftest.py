"""Shared fixtures: a real redis-server per test session (see tests/fakes/redis_server.py); the research kernel
compiled once before the workers start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.redis_server import RedisServer, required


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the research kernel once, in the main process, before xdist's workers start: every worker and
    every child process then loads it from the on-disk cache instead of compiling it again at the same time.
    The apps the tests start do not warm it up in the background (RESEARCH_WARM_UP=0): it is warm already."""
    os.environ.setdefault("RESEARCH_WARM_UP", "0")
    if hasattr(session.config, "workerinput"):
        return
    from core.research.warm import kernel_ready, warm_up

    if not kernel_ready():
        warm_up()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer()
    try:
        srv.start()
    except FileNotFoundError as e:
        if required():
            pytest.fail(f"{e}: under CI=true the Redis tests must run")
        pytest.skip(str(e))
    yield srv
    srv.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database for each test."""
    import redis

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a fault test killed it
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session", autouse=True)
def feed_cache_of_this_session(tmp_path_factory) -> Iterator[None]:
    """Scored feeds (core/research/feed_cache.py) are kept in a folder of this test session (each xdist worker has
    its own): no test reads a feed cached by an earlier run, and none writes to the project's data/cache/feeds.
    Replays, sweeps and the CLI and app processes the tests start use it; tests/test_feed_cache.py uses its own."""
    import os

    old = os.environ.get("FEED_CACHE_DIR")
    os.environ["FEED_CACHE_DIR"] = str(tmp_path_factory.mktemp("feed-cache"))
    yield
    if old is None:
        os.environ.pop("FEED_CACHE_DIR", None)
    else:
        os.environ["FEED_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def every_run_through_app_py(monkeypatch):
    """AppTest forgets between runs that st.navigation turned off the pages/ folder's discovery (the server
    remembers), so from the second run of a session on it would run the page file alone, without app.py's
    sidebar and navigation. Run app.py every time, as `streamlit run app.py` does."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner

    def run_app_py(main_script_path: str) -> None:
        PagesManager.uses_pages_directory = False
        code = compile(Path(main_script_path).read_text(), main_script_path, "exec")
        exec(code, {"__name__": "__main__", "__file__": main_script_path})  # noqa: S102

    monkeypatch.setattr(script_runner, "_mpa_v1", run_app_py)


@pytest.fixture(autouse=True)
def keep_the_real_main_module():
    """Streamlit (AppTest too) installs the script it runs as ``sys.modules["__main__"]`` with ``__file__`` =
    app.py and never puts the old one back; a later test of the same process that spawns processes (the Redis
    bucket test's four workers) would then have each child re-run app.py, which starts an engine and, on a fresh
    checkout's empty database, dies before the child's own work. Each test gets back the process's ``__main__``."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main



@pytest.fixture(autouse=True)
def fresh_sign_in_guard():
    """ui.auth counts wrong passwords for the whole process (issue 30): each test starts and ends with none."""
    import sys

    def reset() -> None:
        auth = sys.modules.get("ui.auth")
        if auth is not None and hasattr(auth, "GUARD"):
            auth.GUARD.reset()

    reset()
    yield
    reset()
