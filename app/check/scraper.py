"""HTTP client of the scraper service (POST {SCRAPER_URL}/scrape).

Anything that is not a well-formed success raises ScraperError with a one-line reason: timeouts,
connection errors, non-2xx answers, invalid JSON, `success: false`, missing or mistyped fields.
The caller counts each as a breaker failure; none of them crashes a worker.
"""

from __future__ import annotations

import json

from app.section import SectionInfo

TEXT_FIELDS = ("subject", "catalog_nbr", "title", "instructor", "location", "meeting_times")
INT_FIELDS = ("seats_available", "seats_capacity")
# A section's answer is about 1 KB; anything near this is not one (and is not held in memory).
MAX_ANSWER_BYTES = 256 * 1024


class ScraperError(Exception):
    """The scraper did not give a usable answer."""


def parse_section(body: object) -> SectionInfo:
    """Validate the scraper's JSON answer; raise ScraperError naming what is wrong."""
    if not isinstance(body, dict):
        raise ScraperError("answer is not a JSON object")
    if body.get("success") is not True:
        raise ScraperError(f"scraper reported failure: {str(body.get('error', 'no error given'))[:200]}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ScraperError("answer has no data object")
    fields: dict = {}
    for name in TEXT_FIELDS:
        value = data.get(name)
        if value is None and name in ("location", "meeting_times", "instructor"):
            value = ""
        if not isinstance(value, str):
            raise ScraperError(f"field {name!r} missing or not a string")
        fields[name] = value.strip()
    for name in INT_FIELDS:
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ScraperError(f"field {name!r} missing or not a non-negative integer")
        fields[name] = value
    nrs = data.get("non_reserved_seats")
    if nrs is not None and (not isinstance(nrs, int) or isinstance(nrs, bool) or nrs < 0):
        raise ScraperError("field 'non_reserved_seats' is not an integer or null")
    fields["non_reserved_seats"] = nrs
    return SectionInfo(**fields)


class ScraperClient:
    """POSTs to the scraper through one keep-alive connection pool (thread-safe), each call ended
    by `timeout` seconds after it started, whatever the scraper does: a trickled or endless answer
    is cut at the deadline, a body over MAX_ANSWER_BYTES is refused (app.httpdeadline).

    urllib3 rather than requests (which sits on top of it): per call requests spent ~1.1 ms of
    CPU merging settings, hooks and cookies this client never uses, urllib3 ~0.45 ms
    (bench/check_cost.py, issue 20), on every check, while four workers share one GIL. Trust is
    unchanged: certifi's CA bundle, as requests used. No retries here: a failed call is the
    breaker's and the task's to retry.
    """

    def __init__(self, base_url: str, token: str, timeout: float, maxsize: int = 8):
        import certifi
        import urllib3

        from app.httpdeadline import BoundedClient

        self._urllib3 = urllib3
        url = urllib3.util.parse_url(base_url.rstrip("/") + "/scrape")
        self.url = url.url
        self.token = token
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "Accept": "application/json"}
        # connect quickly or not at all; the whole call is bounded by the scraper timeout
        self.client = BoundedClient(timeout, max_body=MAX_ANSWER_BYTES, maxsize=maxsize,
                                    ca_certs=certifi.where() if url.scheme == "https" else None)

    def fetch(self, term: str, class_nbr: str) -> SectionInfo:
        from app.httpdeadline import BodyTooLarge, DeadlineExceeded

        errors = self._urllib3.exceptions
        body = json.dumps({"sectionNumber": class_nbr, "term": term}).encode()
        try:
            resp = self.client.request("POST", self.url, body=body, headers=self.headers)
        except DeadlineExceeded:
            raise ScraperError(f"timed out after {self.timeout:g}s (the whole call)") from None
        except BodyTooLarge as exc:
            raise ScraperError(str(exc)) from None
        except errors.NewConnectionError:  # a subclass of its ConnectTimeoutError, for history
            raise ScraperError("request failed: NewConnectionError") from None
        except errors.TimeoutError:
            raise ScraperError(f"timed out after {self.timeout:g}s") from None
        except (errors.HTTPError, OSError) as exc:
            raise ScraperError(f"request failed: {type(exc).__name__}") from None
        if resp.status != 200:
            detail = ""
            try:
                detail = str(json.loads(resp.data).get("error", ""))[:200]
            except (ValueError, AttributeError):
                pass
            raise ScraperError(f"HTTP {resp.status}" + (f": {detail}" if detail else ""))
        try:
            answer = json.loads(resp.data)
        except ValueError:
            raise ScraperError("answer is not valid JSON") from None
        return parse_section(answer)
