"""Sending through Resend's batch API with the resend SDK, as Resend really answers.

- Batches go out with permissive validation (`x-batch-validation: permissive`): an invalid address
  costs that one email (Resend names it by index in `errors`), not the whole batch of up to 100.
- Retried here with exponential backoff, honouring `retry-after`: 429, 5xx, network errors (the
  SDK reports them as 500) and 409 `concurrent_idempotent_requests` (our earlier attempt with this
  key is still in flight at Resend, say after a client timeout: its outcome is replayed once done).
- Not retried here, but not given up either (`SendFailed.permanent` False): what the operator can
  fix (`SendFailed.config`: 401/403, a key being rotated or a domain not yet verified, and a 422
  about the `from` field, a sender Resend refuses) and whatever is still failing after the last
  attempt. The batch stays undelivered and the sweep tries again with backoff (app.mail.delivery).
- Given up (`permanent` True): other 400/422 and 409 `invalid_idempotent_request`, which the
  delivery flow rules out by construction (a batch Resend may hold is resent byte for byte).
- `SendFailed.maybe_sent`: whether Resend may have accepted the batch. Only an answer that says
  it did not (4xx but 409) or a connection that never opened rule that out; a 5xx, a read
  timeout or a key still in flight (409) leave it possible, and the batch keeps its key and bytes.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # the SDK is imported when a Mailer is made: the web process never sends
    from resend.exceptions import ResendError

log = logging.getLogger(__name__)

MAX_BATCH = 100
CONCURRENT_KEY = "concurrent_idempotent_requests"
AUTH_STATUSES = (401, 403)


# The SDK reports a request that never reached Resend as a 500 "HttpClientError": these say the
# connection never opened (refused, unresolvable, connect timeout), so nothing was sent.
_NOT_CONNECTED = ("NewConnectionError", "Failed to establish a new connection", "ConnectTimeout",
                  "NameResolutionError", "Failed to resolve")
_SENDER_ERROR = re.compile(r"`from`|\bfrom (field|address)\b|invalid_from_address", re.IGNORECASE)


def is_sender_error(text: str) -> bool:
    """A refusal of our `from` field: the operator's to fix (NOTIFICATION_FROM_EMAIL), not the
    recipient's, so the email waits instead of being given up."""
    return bool(_SENDER_ERROR.search(text or ""))


class SendFailed(Exception):
    def __init__(self, message: str, permanent: bool, status: int | None = None, *,
                 maybe_sent: bool = True, config: bool = False, error_type: str | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.maybe_sent = maybe_sent
        self.config = config
        self.error_type = error_type  # Resend's error name (invalid_idempotent_request, ...)


@dataclass
class SendResult:
    """Resend's answer per email, in the batch's order: an id, or the reason it was refused."""

    ids: list[str | None]
    errors: dict[int, str] = field(default_factory=dict)


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


def _retryable(status: int, error_type: str) -> bool:
    return status == 429 or status >= 500 or (status == 409 and error_type == CONCURRENT_KEY)


def _maybe_sent(exc: ResendError, status: int) -> bool:
    if status >= 500:
        return not (exc.error_type == "HttpClientError"
                    and any(s in str(exc.message) for s in _NOT_CONNECTED))
    return status == 409  # ours still in flight, or a key already used: Resend may have sent it


def parse_answer(answer, count: int) -> SendResult:
    """Map a (permissive) batch answer onto the batch: `data` lists the accepted emails in order,
    `errors` names the refused ones by index."""
    errors: dict[int, str] = {}
    raw_errors = answer.get("errors") if isinstance(answer, dict) else None
    for err in raw_errors or []:
        try:
            index = int(err["index"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= index < count:
            errors[index] = str(err.get("message") or "refused by Resend")
    data = answer.get("data") if isinstance(answer, dict) else None
    accepted = iter([d.get("id") if isinstance(d, dict) else None for d in data]
                    if isinstance(data, list) else [])
    ids = [None if i in errors else next(accepted, None) for i in range(count)]
    return SendResult(ids=ids, errors=errors)


class Mailer:
    def __init__(self, api_key: str, api_url: str, *, attempts: int = 4, base_delay: float = 1.0,
                 max_delay: float = 20.0, timeout: float = 15,
                 sleep: Callable[[float], None] = time.sleep):
        import resend

        # The SDK keeps its configuration in module globals; one process sends with one account.
        resend.api_key = api_key
        resend.api_url = api_url
        # every request ends within `timeout` seconds, whatever Resend or a proxy does (trickling,
        # never answering, an endless body): app.mail.transport
        from app.mail.transport import BoundedResendClient

        resend.default_http_client = BoundedResendClient(timeout)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep

    def send_batch(self, emails: Sequence[dict], idempotency_key: str) -> SendResult:
        """Send up to 100 emails in one request; per email an id or a reason, or SendFailed."""
        if not 0 < len(emails) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} emails, not {len(emails)}")
        import resend
        from resend.exceptions import ResendError

        from app.mail.transport import prepared_body

        options = {"idempotency_key": idempotency_key, "batch_validation": "permissive"}
        # app.db.batches.EncodedEmails: the batch's JSON as encoded when it was stored
        body = getattr(emails, "body", None)
        maybe_sent = False  # over this call's attempts: one unanswered attempt makes it True
        for attempt in range(1, self.attempts + 1):
            try:
                if body is None:
                    answer = resend.Batch.send(list(emails), options)
                else:  # the SDK builds the request (headers, errors), the body is ours as encoded
                    with prepared_body(body):
                        answer = resend.Batch.send([], options)
            except ResendError as exc:
                status = _status(exc)
                reason = f"HTTP {status} {exc.error_type}: {exc.message}"
                maybe_sent = maybe_sent or _maybe_sent(exc, status)
                if status in AUTH_STATUSES or (status == 422 and is_sender_error(
                        f"{exc.error_type} {exc.message}")):
                    raise SendFailed(reason, permanent=False, status=status, maybe_sent=maybe_sent,
                                     config=True) from None
                if not _retryable(status, exc.error_type):
                    raise SendFailed(reason, permanent=True, status=status,
                                     maybe_sent=maybe_sent, error_type=exc.error_type) from None
                if attempt == self.attempts:
                    raise SendFailed(reason, permanent=False, status=status,
                                     maybe_sent=maybe_sent) from None
                delay = _retry_after(exc)
                if delay is None:
                    delay = self.base_delay * 2 ** (attempt - 1)
                delay = min(delay, self.max_delay)
                log.warning("resend %s (attempt %d/%d), retrying in %.1fs", reason, attempt,
                            self.attempts, delay)
                self.sleep(delay)
                continue
            return parse_answer(answer, len(emails))
        raise AssertionError("unreachable")
