"""The resend SDK's HTTP client, replaced by one whose every request ends within its deadline.

The SDK's own client (requests) bounds each socket read, not the request: Resend, or anything
between, answering a byte at a time would hold a sender for as long as it trickles. This one sends
through app.httpdeadline: each request ends `timeout` seconds after it started, whatever the peer
does, and an answer over MAX_ANSWER_BYTES is refused. A failure is raised as the SDK expects from
its client (it turns it into a ResendError "HttpClientError", status 500): a connection never
made says so ("NewConnectionError", nothing was sent), anything else leaves the send in doubt.
"""

from __future__ import annotations

import json as jsonlib
import threading
from contextlib import contextmanager
from typing import Any, Mapping

from resend.http_client import HTTPClient

from app.httpdeadline import BodyTooLarge, BoundedClient, DeadlineExceeded

# A batch answer lists up to 100 ids and errors: some kilobytes.
MAX_ANSWER_BYTES = 1024 * 1024


_prepared = threading.local()


@contextmanager
def prepared_body(body: bytes):
    """The JSON body, already encoded, of the requests this thread makes through the SDK inside
    the block (app.mail.mailer.EncodedEmails): sent as it is, whatever `json` the SDK passes."""
    _prepared.body = body
    try:
        yield
    finally:
        _prepared.body = None


class BoundedResendClient(HTTPClient):
    def __init__(self, timeout: float) -> None:
        import certifi

        self.timeout = timeout
        self.client = BoundedClient(timeout, max_body=MAX_ANSWER_BYTES, ca_certs=certifi.where())

    def request(self, method: str, url: str, headers: Mapping[str, str], json: Any = None,
                files: Any = None, data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        import urllib3

        if files is not None or data is not None:  # attachments and forms: this service sends none
            raise RuntimeError("Request failed: only JSON requests are supported")
        headers = dict(headers)
        body = getattr(_prepared, "body", None)
        if body is not None:
            headers["Content-Type"] = "application/json"
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        try:
            answer = self.client.request(method.upper(), url, body=body, headers=headers)
        except DeadlineExceeded:
            raise RuntimeError(f"Request failed: timed out after {self.timeout:g}s (the whole call)") from None
        except BodyTooLarge as exc:
            raise RuntimeError(f"Request failed: {exc}") from None
        except urllib3.exceptions.NewConnectionError as exc:
            raise RuntimeError(f"Request failed: NewConnectionError: {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RuntimeError(f"Request failed: {type(exc).__name__}: {exc}") from None
        return answer.data, answer.status, answer.headers
