"""The process's long-lived clients, built once from the settings and shared by its threads."""

from __future__ import annotations

import threading

import redis
from psycopg_pool import ConnectionPool

from app import db
from app.breaker import CircuitBreaker
from app.deadletters import DeadLetters
from app.heartbeat import Heartbeat
from app.keys import Keys
from app.lock import CronLock
from app.mailer import Mailer
from app.outbox import Outbox
from app.pending import PendingChecks
from app.scraper import ScraperClient
from app.settings import Settings, get_settings
from app.simscraper import SimulatedScraper
from app.slots import SlotMarkers


class Services:
    """Built eagerly: nothing here connects until first use, and eager construction is safe
    under the consumer's worker threads (lazy properties would race)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        # Short timeouts: these are quick commands (the queue's blocking reads use huey's own pool).
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True,
                                          socket_timeout=5, socket_connect_timeout=5)
        self.pool: ConnectionPool = db.make_pool(settings.database_url)
        self.breaker = CircuitBreaker(self.redis, self.keys.breaker)
        self.cron_lock = CronLock(self.redis, self.keys.cron_lock)
        self.slots = SlotMarkers(self.redis, self.keys)
        self.pending = PendingChecks(self.redis, self.keys)
        self.dead_letters = DeadLetters(self.redis, self.keys)
        self.heartbeat = Heartbeat(self.redis, self.keys, release=settings.release)
        # The dev stand-ins only when the settings ask for them (Settings refuses them outside
        # SEATWATCH_ENV=development).
        if settings.scraper == "simulated":
            self.scraper = SimulatedScraper(settings.sim_period)
        else:
            self.scraper = ScraperClient(settings.scraper_url, settings.scraper_secret_token,
                                         settings.scraper_timeout)
        if settings.mailer == "outbox":
            self.mailer = Outbox(settings.outbox_dir)
        else:
            self.mailer = Mailer(settings.resend_api_key, settings.resend_api_url)

    def close(self) -> None:
        self.pool.close()
        self.redis.close()


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The process's one Services (the consumer's threads race for it at start)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services(get_settings())
        return _services
