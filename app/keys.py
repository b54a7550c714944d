"""Names of the Redis keys this service owns (huey's own keys are huey.*.{name})."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str  # e.g. "seatwatch:"

    @property
    def breaker(self) -> str:
        return f"{self.prefix}breaker:scraper"

    @property
    def cron_lock(self) -> str:
        return f"{self.prefix}cron-lock"

    def cron_slot(self, slot: str) -> str:
        return f"{self.prefix}cron-slot:{slot}"

    def slot_stats(self, slot: str) -> str:
        return f"{self.prefix}slot-stats:{slot}"

    def last_cron(self, group: str) -> str:
        return f"{self.prefix}last-cron:{group}"

    def pending(self, term: str, class_nbr: str) -> str:
        return f"{self.prefix}pending:{term}:{class_nbr}"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    @property
    def sweep_lock(self) -> str:
        return f"{self.prefix}sweep-lock"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}heartbeat"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def alerts_lock(self) -> str:
        return f"{self.prefix}alerts-lock"

    @property
    def health_report(self) -> str:
        return f"{self.prefix}health-report"

    @property
    def work_stats(self) -> str:  # app.workstats: the worker's counters for /api/metrics
        return f"{self.prefix}work-stats"
