"""One section check: scrape through the breaker, detect changes, claim, send, store."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from app import db
from app.check.changes import carried, detect, state_values
from app.check.scraper import ScraperError
from app.db import batches, watches
from app.mail.build import EmailComposer
from app.mail.delivery import deliver_batch
from app.mail.mailer import MAX_BATCH
from app.section import Change, NOTIFYING, SectionInfo

log = logging.getLogger(__name__)


class CheckFailed(Exception):
    """The section could not be checked this time (retried, then dead-lettered)."""


@dataclass
class CheckResult:
    term: str
    class_nbr: str
    changes: list[str] = field(default_factory=list)
    baseline: bool = False
    claimed: int = 0
    delivered: int = 0
    open_seats: int | None = None
    instructor: str | None = None
    stale: bool = False  # an older scrape than the stored state: ignored

    def as_dict(self) -> dict:
        return asdict(self)


def scrape(services, term: str, class_nbr: str, first=None) -> SectionInfo:
    """The scraper call, guarded by the shared breaker (raises BreakerOpen or CheckFailed);
    `first(pipeline)`: Redis commands sent in the breaker's round trip, before it."""
    report_success = services.breaker.allow(first)
    try:
        info = services.scraper.fetch(term, class_nbr)
    except ScraperError as exc:
        services.breaker.record_failure()
        log.warning("scraper failed for %s/%s: %s", term, class_nbr, exc)
        raise CheckFailed(f"scraper: {exc}") from None
    if report_success:  # a closed breaker with no failure counted: nothing to record
        services.breaker.record_success()
    return info


def check_section(services, term: str, class_nbr: str, first=None) -> CheckResult:
    info = scrape(services, term, class_nbr, first)
    scraped = time.monotonic()  # placed on the database's clock below, not this host's own
    result = CheckResult(term, class_nbr, open_seats=info.open_seats, instructor=info.instructor)
    batch_keys: list[tuple[str, object]] = []  # each with its emails as encoded when stored
    # Four round trips to the database for a quiet check or a first sighting (BEGIN, the lock
    # with the site's row, the write, COMMIT): the pool's own check round trip is skipped for a
    # connection just used (app.db.check_connection; a check is retried if that ever misses).
    with db.transaction(services.pool, quick_check=True) as conn:
        # State per (term, class_nbr), locked: of two overlapping checks of one section, the
        # second waits here, and a scrape older than the stored one changes nothing.
        previous, site, scraped_at = watches.lock_section_state(conn, term, class_nbr, scraped)
        if previous is not None and previous["scraped_at"] >= scraped_at:
            result.stale = True
            log.info("checked %s/%s: a newer scrape is already stored, this one is ignored",
                     term, class_nbr)
            return result
        if previous is None:
            # No state of our own yet (a section first seen since this service took over, or one
            # the old worker stored during the cutover): the site's row counts if it is this term's.
            previous = site if site is not None and site["term"] == term else None
        result.baseline = previous is None
        # An unknown non-reserved count or instructor carries the stored one (app.check.changes):
        # what is compared, stored and written into emails.
        info = carried(previous, info)
        result.open_seats, result.instructor = info.open_seats, info.instructor
        changes = detect(previous, info)
        result.changes = [c.value for c in changes]
        if Change.SEATS_FILLED in changes:
            cleared = watches.clear_seat_notifications(conn, term, class_nbr)
            log.info("%s/%s filled: %d seat notifications cleared", term, class_nbr, cleared)
        notifying = [c for c in changes if c in NOTIFYING]
        watchers = watches.watchers_for_section(conn, term, class_nbr) if notifying else []
        for kind in notifying:
            watch_ids = [w.watch_id for w in watchers]
            if kind is Change.INSTRUCTOR_ASSIGNED:
                # a new name: the last name's live claims make way; a name already told is not told again
                watches.clear_seat_notifications(conn, term, class_nbr, kind.value)
                told = watches.record_instructor_announcements(conn, watch_ids, info.instructor)
                watch_ids = [w for w in watch_ids if w in told]
            ids = watches.claim_notifications(conn, watch_ids, kind.value)
            watchers_by_id = {w.watch_id: w for w in watchers}
            claimed = [(watchers_by_id[w], nid) for w, nid in zip(watch_ids, ids) if nid]
            result.claimed += len(claimed)
            if not claimed:
                continue
            # the templates rendered once for the section, each watcher's link put in (app.mail)
            composer = EmailComposer(
                kind, term=term, class_nbr=class_nbr, info=info,
                site_url=services.settings.site_url,
                sender=services.settings.notification_from_email,
                unsubscribe_secret=services.settings.unsubscribe_secret)
            for start in range(0, len(claimed), MAX_BATCH):
                chunk = claimed[start:start + MAX_BATCH]
                # Deterministic and unique: derived from the first claim's id, stored with the rows.
                batch_key = f"seatwatch-{kind.value}-{chunk[0][1]}"
                encoded = batches.add_batch(conn, batch_key, kind.value, [
                    (nid, composer.email(to=watcher.email, user_id=watcher.user_id))
                    for watcher, nid in chunk], term=term, class_nbr=class_nbr)
                batch_keys.append((batch_key, encoded))
        values = state_values(info)
        # this service's state and the site's dashboard row, in one round trip
        watches.save_states(conn, term, class_nbr, values, scraped_at, services.settings.checker)
    # Claims and state are committed: from here a crash leaves work for the sweep, never a loss.
    for key, encoded in batch_keys:
        result.delivered += deliver_batch(services, key, encoded)
    if changes or result.baseline:
        log.info("checked %s/%s: %s", term, class_nbr,
                 "baseline" if result.baseline else ", ".join(result.changes))
    return result
