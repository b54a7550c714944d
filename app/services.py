"""The process's long-lived clients, built once from the settings and shared by its threads."""

from __future__ import annotations

import threading

import redis
from psycopg_pool import ConnectionPool

from app import db
from app.check.breaker import CircuitBreaker
from app.check.scraper import ScraperClient
from app.check.simscraper import SimulatedScraper
from app.keys import Keys
from app.mail.mailer import Mailer
from app.mail.outbox import Outbox
from app.queue.deadletters import DeadLetters
from app.queue.heartbeat import Heartbeat
from app.schedule.lock import CronLock
from app.schedule.pending import PendingChecks
from app.schedule.slots import SlotMarkers
from app.settings import Settings, get_settings


class Services:
    """Built eagerly, except the scraper client and the mailer: nothing here connects until first
    use. Those two are made on first use (under a lock: the consumer's threads race for them),
    because their HTTP libraries cost the web process memory it never uses (bench/memory.py)."""

    _lazy_lock = threading.Lock()

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

    def __getattr__(self, name: str):
        # Only called for attributes not set yet: `scraper` and `mailer` are built here once,
        # then found on the instance (a test may also set them).
        builders = {"scraper": self._make_scraper, "mailer": self._make_mailer}
        if name not in builders:
            raise AttributeError(name)
        with self._lazy_lock:
            if name not in self.__dict__:
                self.__dict__[name] = builders[name]()
            return self.__dict__[name]

    def _make_scraper(self):
        # The dev stand-ins only when the settings ask for them (Settings refuses them outside
        # SEATWATCH_ENV=development).
        if self.settings.scraper == "simulated":
            return SimulatedScraper(self.settings.sim_period)
        return ScraperClient(self.settings.scraper_url, self.settings.scraper_secret_token,
                             self.settings.scraper_timeout)

    def _make_mailer(self):
        if self.settings.mailer == "outbox":
            return Outbox(self.settings.outbox_dir)
        return Mailer(self.settings.resend_api_key, self.settings.resend_api_url)

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
