"""Sending through Resend's batch API with the resend SDK, retrying what is worth retrying.

429 and 5xx (and network errors, which the SDK reports as 500) are retried with exponential
backoff, honouring `retry-after`; 400/401/403/409/422 are not. The caller passes a deterministic
Idempotency-Key, so a retry after a lost answer never sends twice.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import resend
from resend.exceptions import ResendError

log = logging.getLogger(__name__)

MAX_BATCH = 100


class SendFailed(Exception):
    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def _status(exc: ResendError) -> int:
    try:
        return int(exc.code)
    except (TypeError, ValueError):
        return 500


def _retry_after(exc: ResendError) -> float | None:
    headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class Mailer:
    def __init__(self, api_key: str, api_url: str, *, attempts: int = 4, base_delay: float = 1.0,
                 max_delay: float = 20.0, timeout: int = 15,
                 sleep: Callable[[float], None] = time.sleep):
        # The SDK keeps its configuration in module globals; one process sends with one account.
        resend.api_key = api_key
        resend.api_url = api_url
        resend.default_http_client = resend.RequestsClient(timeout=timeout)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep

    def send_batch(self, emails: Sequence[dict], idempotency_key: str) -> list[str | None]:
        """Send up to 100 emails in one request; the Resend ids in order, or SendFailed."""
        if not 0 < len(emails) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} emails, not {len(emails)}")
        for attempt in range(1, self.attempts + 1):
            try:
                answer = resend.Batch.send(list(emails), {"idempotency_key": idempotency_key})
            except ResendError as exc:
                status = _status(exc)
                reason = f"HTTP {status} {exc.error_type}: {exc.message}"
                if status != 429 and status < 500:
                    raise SendFailed(reason, permanent=True) from None
                if attempt == self.attempts:
                    raise SendFailed(reason, permanent=False) from None
                delay = _retry_after(exc)
                if delay is None:
                    delay = self.base_delay * 2 ** (attempt - 1)
                delay = min(delay, self.max_delay)
                log.warning("resend %s (attempt %d/%d), retrying in %.1fs", reason, attempt,
                            self.attempts, delay)
                self.sleep(delay)
                continue
            data = answer.get("data") if isinstance(answer, dict) else None
            ids = [d.get("id") for d in data] if isinstance(data, list) else []
            return ids + [None] * (len(emails) - len(ids))
        raise AssertionError("unreachable")
