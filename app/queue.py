"""The Huey instance over Redis. It imports no tasks (app.tasks registers them).

Tuned for a small VPS and for managed Redis plans that count commands: results are off (the
results hash would otherwise grow forever), workers block on the queue for HUEY_READ_TIMEOUT_SECONDS
instead of polling, and the connection pool's socket timeout sits above that read (redis-py 8
defaults to 5 s, which would drop and re-open each worker's connection every 5 s).
"""

from __future__ import annotations

from huey import RedisHuey
from redis import ConnectionPool

from app.settings import Settings, get_settings


def make_huey(settings: Settings) -> RedisHuey:
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=settings.huey_read_timeout + 10,
        socket_connect_timeout=10,
    )
    return RedisHuey(
        name=settings.name,
        connection_pool=pool,
        results=False,
        store_none=False,
        utc=True,
        blocking=True,
        read_timeout=settings.huey_read_timeout,
    )


huey = make_huey(get_settings())
