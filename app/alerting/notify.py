"""Where the operator's alerts go: Resend email, JSON POSTs, and (if installed) Apprise URLs.

Each configured destination is a Channel with a stable `id` (a hash of the URL, so the alert
state in Redis names channels without storing their tokens) and `send(event)`, which returns on
success and raises ChannelFailed with a one-line, secret-free reason otherwise. Every call is
bounded (SEND_TIMEOUT_SECONDS) and tried once: app.alerting.alerts retries on its next evaluation.

- email (SEATWATCH_ALERT_EMAIL): one plain-text email to every address, through Resend's API with
  the service's own key and sender; the event's id is the Idempotency-Key, so a retry after a
  lost answer is replayed by Resend, not sent twice.
- http:// and https:// (SEATWATCH_ALERT_URLS): a JSON POST of the event (`event`, `status`,
  `failing`, `summary`, `host`, `at`, ...; `text` repeats the summary for Slack-style webhooks).
  Any 2xx is success.
- any other scheme (ntfy://, slack://, tgram://, mailto://...): Apprise, imported only when such
  an alert is sent (it costs ~16 MB once loaded, measured; not a dependency: Settings refuses
  these URLs unless it is installed).

requests and apprise are imported inside `send`: the web process and an idle
worker never load them for this.
"""

from __future__ import annotations

import hashlib
import json
import logging
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5


class ChannelFailed(Exception):
    """A destination did not take the event; the message is safe to log."""


def _url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


class EmailChannel:
    kind = "email"

    def __init__(self, settings):
        self.settings = settings
        self.id = "email"
        self.label = f"email to {len(settings.alert_emails)} address(es)"

    def send(self, event: dict) -> None:
        # Resend's HTTP API directly, not the SDK: the SDK keeps its client and timeout in module
        # globals, which the worker's Mailer set for the students' emails (app.mail.mailer).
        import requests

        s = self.settings
        subject = f"[{s.name}] {event['event']}: {event['summary']}"[:200]
        try:
            answer = requests.post(
                f"{s.resend_api_url}/emails", timeout=SEND_TIMEOUT_SECONDS,
                json={"from": s.notification_from_email, "to": list(s.alert_emails),
                      "subject": subject, "text": email_text(event)},
                headers={"Authorization": f"Bearer {s.resend_api_key}",
                         "Idempotency-Key": f"{s.name}-alert-{event['id']}"})
        except requests.RequestException as exc:
            raise ChannelFailed(f"Resend unreachable: {type(exc).__name__}") from None
        if not 200 <= answer.status_code < 300:
            raise ChannelFailed(f"Resend HTTP {answer.status_code}")


def email_text(event: dict) -> str:
    lines = [event["summary"], "", f"event: {event['event']}", f"status: {event['status']}",
             f"failing: {', '.join(event['failing']) or 'none'}", f"host: {event['host']}",
             f"at: {event['at']}"]
    for name, why in event.get("reasons", {}).items():
        lines.append(f"  {name}: {why}")
    return "\n".join(lines) + "\n"


class WebhookChannel:
    kind = "webhook"

    def __init__(self, url: str):
        self.url = url
        self.id = "url-" + _url_id(url)
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        self.label = f"{parts.scheme}://{parts.hostname}{port}"  # no path or query: they hold tokens

    def send(self, event: dict) -> None:
        import requests

        body = {k: v for k, v in event.items() if k != "id"} | {"id": event["id"],
                                                                "text": event["summary"]}
        try:
            answer = requests.post(self.url, data=json.dumps(body),
                                   headers={"Content-Type": "application/json"},
                                   timeout=SEND_TIMEOUT_SECONDS, allow_redirects=False)
        except requests.RequestException as exc:
            raise ChannelFailed(type(exc).__name__) from None
        if not 200 <= answer.status_code < 300:
            raise ChannelFailed(f"HTTP {answer.status_code}")


class AppriseChannel:
    kind = "apprise"

    def __init__(self, url: str):
        self.url = url
        self.id = "url-" + _url_id(url)
        self.label = f"{urlsplit(url).scheme}:// (Apprise)"

    def send(self, event: dict) -> None:
        try:
            import apprise
        except ImportError:
            raise ChannelFailed("Apprise is not installed") from None
        notifier = apprise.Apprise()
        if not notifier.add(self.url):
            raise ChannelFailed("Apprise does not understand this URL")
        if not notifier.notify(title=f"{event['event']}: {event['status']}",
                               body=email_text(event)):
            raise ChannelFailed("Apprise could not deliver")


def channels(settings) -> list:
    """Every destination the settings name, email first."""
    out: list = [EmailChannel(settings)] if settings.alert_emails else []
    for url in settings.alert_urls:
        http = url.lower().startswith(("http://", "https://"))
        out.append(WebhookChannel(url) if http else AppriseChannel(url))
    return out
