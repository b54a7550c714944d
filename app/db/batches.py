"""Delivery batches (app.mail.delivery): a batch of emails stored with its claims, leased by one
sender, frozen before its first send so a retry resends the same bytes under the same idempotency
key, closed with an outcome per email; the sweep's view of what is still open, and the counts that
health reports."""

from __future__ import annotations

import json
from collections.abc import Sequence as SequenceABC
from typing import Sequence

from psycopg.types.json import Jsonb


class EncodedEmails(SequenceABC):
    """A batch's emails as the JSON array already encoded when the batch was stored (add_batch):
    app.mail.mailer sends these bytes as the request's body, encoded once (issue 30) instead of again by
    the SDK's client. Still a sequence of the email dicts for anyone who reads it (the dev outbox),
    decoded on first use."""

    def __init__(self, body: bytes, count: int):
        self.body, self._count, self._emails = body, count, None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if self._emails is None:
            self._emails = json.loads(self.body)
        return self._emails[index]


def add_batch(conn, batch_key: str, kind: str, rows: Sequence[tuple[str, dict]],
              term: str | None = None, class_nbr: str | None = None):
    """Store a batch: its row (with the section it is about, so a retry can be re-checked), and
    (notification id, email payload) in send order. Each email's row names its watcher's user,
    so deleting the account removes the address (migration 0006).

    Returns the emails' JSON array as encoded here, once (EncodedEmails): the very bytes a send of the frozen
    batch encodes (json.dumps, as psycopg's Jsonb and the Resend client do), provided each
    email's keys come in jsonb's own order (app.mail.build), so the first send can send these
    (freeze_batch's `encoded`) instead of decoding the stored batch and encoding it again."""
    body = json.dumps([payload for _, payload in rows])
    conn.execute("""insert into public.delivery_batches (batch_key, term, class_nbr, notification_type)
                    values (%s, %s, %s, %s)""", (batch_key, term, class_nbr, kind))
    # One statement for the emails (not executemany: see watches.claim_notifications), positions
    # from the arrays' order.
    conn.execute(
        """insert into public.notification_deliveries
               (notification_id, batch_key, position, payload, recipient, notification_type, user_id)
           select e.nid, %(key)s, e.n - 1, p.payload, e.recipient, %(kind)s,
                  (select cw.user_id from public.notifications_sent ns
                   join public.class_watches cw on cw.id = ns.class_watch_id where ns.id = e.nid)
           from unnest(%(nids)s::uuid[], %(recipients)s::text[]) with ordinality as e (nid, recipient, n)
           join jsonb_array_elements(%(payloads)s::jsonb) with ordinality as p (payload, n) using (n)""",
        {"key": batch_key, "kind": kind, "nids": [nid for nid, _ in rows],
         "recipients": [(payload.get("to") or [None])[0] for _, payload in rows],
         "payloads": body})
    return EncodedEmails(body.encode(), len(rows))


def lease_batch(conn, batch_key: str, owner: str, lease_seconds: float) -> dict | None:
    """Take the batch's lease if it is open and nobody holds a live lease; None otherwise.

    One row is the unit: of two senders racing, the second waits for the first's row lock, then
    re-reads the row and finds the lease taken (READ COMMITTED re-checks the WHERE clause).
    """
    return conn.execute(
        """update public.delivery_batches
           set lease_owner = %s, lease_until = now() + make_interval(secs => %s),
               attempts = attempts + 1, last_attempt_at = now(),
               first_attempt_at = coalesce(first_attempt_at, now())
           where batch_key = %s and delivered_at is null and failed_at is null
             and (lease_until is null or lease_until < now())
           returning batch_key, created_at, attempts, payload, delivery_ids, term, class_nbr,
                     notification_type, generation, maybe_sent_at""",
        (owner, lease_seconds, batch_key),
    ).fetchone()


def freeze_batch(conn, batch_key: str, encoded: bytes | None = None):
    """Fix a batch's payload at its first attempt: (delivery row ids, emails) in send order.

    Rows whose claim is gone (seats filled again, watch deleted) are cancelled, never sent.
    `encoded`: what add_batch returned for this batch, given back as the emails (not decoded)
    when no row was cancelled, so the send does not encode them again."""
    conn.execute(
        """update public.notification_deliveries
           set cancelled_at = now(), payload = null, outcome = 'cancelled',
               last_error = 'cancelled: its claim was cleared (seats filled, or the watch deleted)'
           where batch_key = %s and notification_id is null and delivered_at is null
             and failed_at is null and cancelled_at is null""",
        (batch_key,),
    )
    # Gathered and stored by the server in one statement: the emails cross the wire once, and are
    # not decoded and re-encoded here on the way (a third of a 100-watcher check's CPU, issue 20).
    row = conn.execute(
        """update public.delivery_batches b set payload = live.emails, delivery_ids = live.ids
           from (select jsonb_agg(payload order by position) as emails,
                        array_agg(id order by position) as ids
                 from public.notification_deliveries
                 where batch_key = %s and delivered_at is null and failed_at is null
                   and cancelled_at is null and payload is not null) live
           where b.batch_key = %s and live.ids is not null
           returning live.ids, live.emails::text as emails""",
        (batch_key, batch_key),
    ).fetchone()
    if row is None:
        return [], []
    ids = [str(i) for i in row["ids"]]
    # rows are only ever cancelled, never added: as many as were stored is all of them, in order
    if encoded is not None and len(ids) == len(encoded):
        return ids, encoded
    return ids, json.loads(row["emails"])


def freeze_rebuilt(conn, batch_key: str, ids: Sequence[str], emails: Sequence[dict],
                   generation: int) -> list[dict]:
    """A re-checked batch's new emails, frozen for this attempt under a new key generation.

    Returns them as stored: jsonb orders keys its own way, and every resend of this generation
    sends the stored form, so this first send must send exactly that too (same bytes, same key)."""
    row = conn.execute(
        """update public.delivery_batches set payload = %s, delivery_ids = %s::uuid[], generation = %s
           where batch_key = %s returning payload""",
        (Jsonb(list(emails)), list(ids), generation, batch_key),
    ).fetchone()
    return row["payload"]


def mark_in_flight(conn, batch_key: str) -> None:
    """From here until an answer says otherwise, Resend may hold this attempt: a sender that dies
    mid-request leaves the batch to be resent byte for byte under the same key, never rebuilt."""
    conn.execute("""update public.delivery_batches set maybe_sent_at = coalesce(maybe_sent_at, now())
                    where batch_key = %s""", (batch_key,))


def close_batch(conn, batch_key: str, *, outcome: str, error: str | None = None,
                status: int | None = None) -> None:
    """A batch is done: `delivered` (its answer recorded), or closed undelivered (`failed`,
    `unknown`, `cancelled`: failed_at is set). Its payload is dropped."""
    conn.execute(
        f"""update public.delivery_batches
            set {"delivered_at" if outcome == "delivered" else "failed_at"} = now(), outcome = %s,
                lease_owner = null, lease_until = null, payload = null, last_status = %s,
                last_error = %s, next_attempt_at = null
            where batch_key = %s""",
        (outcome, status, None if error is None else error[:500], batch_key),
    )


def release_batch(conn, batch_key: str, owner: str, status: int | None, error: str, *,
                  maybe_sent: bool | None = None, retry_at=None) -> None:
    """An attempt did not deliver for now: drop the lease (if still ours), say why, and when to
    try again. `maybe_sent` True: Resend may hold the key (its answer never came), so the frozen
    payload stays for a byte-identical resend; False: the answer said nothing was sent, so the
    doubt is cleared (None keeps it as it was). A batch without that doubt drops its payload:
    it is rebuilt from the current state at its next attempt."""
    conn.execute(
        """update public.delivery_batches
           set lease_owner = null, lease_until = null, last_status = %s, last_error = %s,
               next_attempt_at = %s,
               maybe_sent_at = case when %s::boolean then coalesce(maybe_sent_at, now())
                                    when not %s::boolean then null else maybe_sent_at end,
               payload = case when %s::boolean or (%s::boolean is null and maybe_sent_at is not null)
                              then payload end
           where batch_key = %s and lease_owner = %s""",
        (status, error[:500], retry_at, maybe_sent, maybe_sent, maybe_sent, maybe_sent,
         batch_key, owner),
    )


def cancel_rows(conn, reasons: dict[str, str]) -> None:
    """Emails no longer true (claim cleared, watcher gone, seats filled): never sent."""
    if not reasons:
        return
    conn.execute(
        """update public.notification_deliveries d
           set cancelled_at = now(), outcome = 'cancelled', payload = null, last_error = c.reason
           from unnest(%s::uuid[], %s::text[]) as c(id, reason)
           where d.id = c.id""",
        (list(reasons), [r[:500] for r in reasons.values()]),
    )


def mark_delivered(conn, ids: Sequence[str], resend_ids: Sequence[str | None]) -> None:
    """Delivery rows (by id) accepted by Resend, with its ids."""
    if not ids:
        return
    conn.execute(
        """update public.notification_deliveries d
           set delivered_at = now(), resend_id = sent.resend_id, attempts = d.attempts + 1,
               last_error = null, payload = null, outcome = 'delivered'
           from unnest(%s::uuid[], %s::text[]) as sent(id, resend_id)
           where d.id = sent.id""",
        (list(ids), list(resend_ids)),
    )


def mark_failed(conn, failures: dict[str, str], outcome: str = "refused") -> None:
    """Emails given up for good, each with its own reason (an invalid address, say)."""
    if not failures:
        return
    conn.execute(
        """update public.notification_deliveries d
           set failed_at = now(), attempts = d.attempts + 1, last_error = f.reason, payload = null,
               outcome = %s
           from unnest(%s::uuid[], %s::text[]) as f(id, reason)
           where d.id = f.id""",
        (outcome, list(failures), [r[:500] for r in failures.values()]),
    )


def fail_open_rows(conn, batch_key: str, reason: str, outcome: str = "failed") -> None:
    """Give up every email of a batch still waiting (attempted or not), with the reason:
    `failed` when Resend never accepted it, `unknown` when a send may have been accepted."""
    conn.execute(
        """update public.notification_deliveries
           set failed_at = now(), last_error = %s, payload = null, outcome = %s
           where batch_key = %s and delivered_at is null and failed_at is null
             and cancelled_at is null""",
        (reason[:500], outcome, batch_key),
    )


def note_attempt(conn, ids: Sequence[str], error: str) -> None:
    """A failed attempt that will be retried, recorded on each email's audit row."""
    conn.execute(
        """update public.notification_deliveries
           set attempts = attempts + 1, last_error = %s
           where id = any(%s::uuid[])""",
        (error[:500], list(ids)),
    )


def open_batch_keys(conn, older_than_seconds: float, limit: int = 50, due_by=None) -> list[str]:
    """Open batches nobody is sending, oldest first, leaving fresh ones to their check and ones
    backing off to their time (`due_by`: the clock; None: whatever their backoff says)."""
    rows = conn.execute(
        """select batch_key from public.delivery_batches
           where delivered_at is null and failed_at is null
             and (lease_until is null or lease_until < now())
             and created_at < now() - make_interval(secs => %s)
             and (%s::timestamptz is null or next_attempt_at is null or next_attempt_at <= %s)
           order by created_at limit %s""",
        (older_than_seconds, due_by, due_by, limit),
    ).fetchall()
    return [r["batch_key"] for r in rows]


def prune_payloads(conn, keep_hours: int = 24) -> int:
    """Drop email payloads past Resend's idempotency window (they can no longer be resent);
    the audit row (recipient, type, times, Resend id, error) stays."""
    cur = conn.execute(
        """update public.notification_deliveries set payload = null
           where payload is not null and created_at < now() - make_interval(hours => %s)""",
        (keep_hours,),
    )
    conn.execute(
        """update public.delivery_batches set payload = null
           where payload is not null and created_at < now() - make_interval(hours => %s)""",
        (keep_hours,),
    )
    return cur.rowcount


def delivery_counts(conn, overdue_after_seconds: float = 900) -> dict:
    """Emails waiting in open batches (`pending`; `overdue` in batches past the given age),
    counted by batch state, so a batch is visible whatever happened to its claims; emails not
    delivered in the last 24 h (`failed`, and `last_24h` by outcome: refused, failed, unknown)
    with the commonest reasons; and the newest refusal an open batch waits on that the operator
    can fix (401/403: the key or domain, 422: the sender). Partial indexes, never the whole table."""
    row = conn.execute(
        """select count(d.id) as pending,
                  count(d.id) filter (where b.created_at < now() - make_interval(secs => %s)) as overdue
           from public.delivery_batches b
           join public.notification_deliveries d on d.batch_key = b.batch_key
           where b.delivered_at is null and b.failed_at is null
             and d.delivered_at is null and d.failed_at is null and d.cancelled_at is null""",
        (overdue_after_seconds,),
    ).fetchone()
    # The reason without the recipient (Resend may quote the address), so like refusals group.
    reasons = conn.execute(
        """select coalesce(outcome, 'failed') as outcome, count(*) as count,
                  left(replace(coalesce(last_error, ''), coalesce(recipient, ''), '<recipient>'), 200)
                      as reason
           from public.notification_deliveries
           where failed_at > now() - interval '24 hours'
           group by 1, 3 order by 2 desc, 1, 3""",
    ).fetchall()
    waiting = conn.execute(
        """select last_status, last_error from public.delivery_batches
           where delivered_at is null and failed_at is null and last_status in (401, 403, 422)
           order by last_attempt_at desc limit 1""",
    ).fetchone()
    by_outcome: dict[str, int] = {}
    for r in reasons:
        by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + r["count"]
    out = {"pending": row["pending"], "overdue": row["overdue"], "failed": sum(by_outcome.values())}
    if by_outcome:
        out["last_24h"] = by_outcome
        out["reasons"] = [dict(r) for r in reasons[:5]]
    if waiting:
        out["refused"] = {"status": waiting["last_status"], "error": waiting["last_error"]}
    return out
