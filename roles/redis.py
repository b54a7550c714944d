"""redis: the local Redis of the primary: localhost only, a password, a memory cap, enabled at boot.

Skipped when REDIS_URL points at another host (a managed Redis) or redis_enabled is off.
"""

from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from roles.common import TEMPLATES, cfg, local_redis, redis_password


@deploy("Redis")
def redis() -> None:
    if not local_redis():
        return
    apt.packages(name="Install Redis", packages=["redis-server"], no_recommends=True)
    conf = files.template(
        name="Configure Redis (bind, password, memory cap)",
        src=str(TEMPLATES / "redis.conf.j2"),
        dest="/etc/redis/redis.conf",
        user="redis", group="redis", mode="640",
        bind=cfg("redis_bind"), port=cfg("redis_port"), maxmemory=cfg("redis_maxmemory"),
        password=redis_password(),
    )
    systemd.service(name="Restart Redis when its configuration changed", service="redis-server",
                    restarted=True, _if=conf.did_change)
    systemd.service(name="Run Redis now and at boot", service="redis-server", running=True, enabled=True)
