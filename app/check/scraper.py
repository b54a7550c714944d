"""HTTP client of the scraper service (POST {SCRAPER_URL}/scrape).

Anything that is not a well-formed success raises ScraperError with a one-line reason: timeouts,
connection errors, non-2xx answers, invalid JSON, `success: false`, missing or mistyped fields.
The caller counts each as a breaker failure; none of them crashes a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.section import SectionInfo

if TYPE_CHECKING:  # imported when a client is made: the web process never needs requests
    import requests

TEXT_FIELDS = ("subject", "catalog_nbr", "title", "instructor", "location", "meeting_times")
INT_FIELDS = ("seats_available", "seats_capacity")


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
    def __init__(self, base_url: str, token: str, timeout: float, session: requests.Session | None = None):
        self.url = base_url.rstrip("/") + "/scrape"
        self.token = token
        self.timeout = timeout
        import requests

        self._requests = requests
        self.session = session or requests.Session()
        # What requests would read from the environment on every call (proxies, CA bundle):
        # read once here instead. Per call it walked os.environ twice, 1.4 ms of CPU of a quiet
        # check's ~5 ms (bench/check_cost.py); the answer cannot change while the process runs.
        self._env = self.session.merge_environment_settings(self.url, {}, None, None, None)
        self.session.trust_env = False

    def fetch(self, term: str, class_nbr: str) -> SectionInfo:
        try:
            resp = self.session.post(
                self.url,
                json={"sectionNumber": class_nbr, "term": term},
                headers={"Authorization": f"Bearer {self.token}"},
                # connect quickly or not at all; the read bound is the scraper timeout
                timeout=(min(5.0, self.timeout), self.timeout),
                **self._env,
            )
        except self._requests.Timeout:
            raise ScraperError(f"timed out after {self.timeout:g}s") from None
        except self._requests.RequestException as exc:
            raise ScraperError(f"request failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            detail = ""
            try:
                detail = str(resp.json().get("error", ""))[:200]
            except (ValueError, AttributeError):
                pass
            raise ScraperError(f"HTTP {resp.status_code}" + (f": {detail}" if detail else ""))
        try:
            body = resp.json()
        except ValueError:
            raise ScraperError("answer is not valid JSON") from None
        return parse_section(body)
