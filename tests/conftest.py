"""Shared fixtures: a real redis-server per test session (see tests/fakes/redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.redis_server import RedisServer, required


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
