"""Where the operator's alerts go: Resend email, JSON POSTs, and (if installed) Apprise URLs.

Each configured destination is a Channel with a stable `id` (a hash of the URL, so the alert
state in Redis names channels without storing their tokens) and `send(event)`, which returns on
success and raises ChannelFailed with a one-line, secret-free reason otherwise. Every call is
bounded in all by SEND_TIMEOUT_SECONDS (a peer trickling its answer cannot hold the evaluation and
its lock) and tried once: app.alerting.alerts retries on its next evaluation. Our own HTTP goes
through app.httpdeadline (urllib3, the scraper's and Resend's stack: one watchdog shuts a late
call's socket); Apprise, whose sockets are its own, runs under app.alerting.deadline's thread bound.

- email (SEATWATCH_ALERT_EMAIL): one plain-text email to every address, through Resend's API with
  the service's own key and sender; the event's id is the Idempotency-Key, so a retry after a
  lost answer is replayed by Resend, not sent twice.
- http:// and https:// (SEATWATCH_ALERT_URLS): a JSON POST of the event (`event`, `status`,
  `failing`, `summary`, `host`, `at`, ...; `text` repeats the summary for Slack-style webhooks).
  Any 2xx is success.
- the webhook URLs of common push services (PUSH_HOSTS: ntfy.sh, hooks.slack.com, discord.com),
  whose endpoints would show a JSON body raw: Apprise, which knows their native URLs and sends
  them a title and a plain-text message. (Telegram's `https://api.telegram.org/bot<token>/
  sendMessage?chat_id=<id>` takes our JSON as is: its `text` is the message.)
- any other scheme (ntfy://, slack://, tgram://, discord://, mailto://...): Apprise. It is in
  requirements.lock (every server has it) and imported only when such an alert is sent (its cost
  once loaded is measured in docs/health.md).

apprise is imported inside `send`: the web process and an idle worker never load it for this.
"""

from __future__ import annotations

import hashlib
import json
import logging
from urllib.parse import urlsplit

from app.alerting.deadline import DeadlineExceeded, within

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5  # each send, in all
MAX_ANSWER_BYTES = 64 * 1024  # a webhook's answer is read (so a trickle is bounded) but never used
# https:// hosts whose webhooks want a message, not our JSON: sent through Apprise's native URLs
PUSH_HOSTS = ("ntfy.sh", "hooks.slack.com", "discord.com", "discordapp.com")


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
        s = self.settings
        subject = f"[{s.name}] {event['event']}: {event['summary']}"[:200]
        if s.mailer == "outbox":  # dev mode: every email goes to the folder, the operator's too
            self._to_outbox(subject, event)
            return
        try:
            status = _post(f"{s.resend_api_url}/emails",
                           json.dumps({"from": s.notification_from_email, "to": list(s.alert_emails),
                                       "subject": subject, "text": email_text(event)}),
                           {"Authorization": f"Bearer {s.resend_api_key}",
                            "Idempotency-Key": f"{s.name}-alert-{event['id']}"})
        except _Unreachable as exc:
            raise ChannelFailed(f"Resend unreachable: {exc}") from None
        if not 200 <= status < 300:
            raise ChannelFailed(f"Resend HTTP {status}")


    def _to_outbox(self, subject: str, event: dict) -> None:
        from html import escape

        from app.mail.outbox import Outbox

        s, text = self.settings, email_text(event)
        result = Outbox(s.outbox_dir).send_batch(
            [{"from": s.notification_from_email, "to": list(s.alert_emails), "subject": subject, "text": text,
              "html": f"<pre>{escape(text)}</pre>"}], f"{s.name}-alert-{event['id']}")
        if result.errors:
            raise ChannelFailed(f"outbox refused it: {next(iter(result.errors.values()))[:120]}")


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
        body = {k: v for k, v in event.items() if k != "id"} | {"id": event["id"],
                                                                "text": event["summary"]}
        try:
            status = _post(self.url, json.dumps(body), {})
        except _Unreachable as exc:
            raise ChannelFailed(str(exc)) from None
        if not 200 <= status < 300:
            raise ChannelFailed(f"HTTP {status}")


class _Unreachable(Exception):
    """No answer: refused, reset, or not within the deadline (the message is the failure's kind)."""


def _post(url: str, body: str, headers: dict) -> int:
    """One JSON POST within SEND_TIMEOUT_SECONDS in all, whatever the peer does; its status."""
    from app.httpdeadline import failure_name, shared_client

    try:
        return shared_client(SEND_TIMEOUT_SECONDS, MAX_ANSWER_BYTES).request(
            "POST", url, body=body.encode(), headers={"Content-Type": "application/json", **headers}).status
    except Exception as exc:  # noqa: BLE001  urllib3's errors, OSError, DeadlineExceeded, BodyTooLarge
        raise _Unreachable(failure_name(exc)) from None


class AppriseChannel:
    kind = "apprise"

    def __init__(self, url: str):
        self.url = url
        self.id = "url-" + _url_id(url)
        self.label = f"{urlsplit(url).scheme}:// (Apprise)"

    def send(self, event: dict) -> None:
        try:
            delivered = within(SEND_TIMEOUT_SECONDS, self._notify, event)
        except DeadlineExceeded:
            raise ChannelFailed(f"no answer within {SEND_TIMEOUT_SECONDS} s") from None
        if not delivered:
            raise ChannelFailed("Apprise could not deliver")

    def _notify(self, event: dict, stop) -> bool:
        try:
            import apprise
        except ImportError:
            raise ChannelFailed("Apprise is not installed") from None
        notifier = apprise.Apprise()
        if not notifier.add(self.url):
            raise ChannelFailed("Apprise does not understand this URL")
        # A title and plain text every push service shows as is (ntfy, Slack, Discord, Telegram).
        return notifier.notify(title=f"{event['event']}: {event['summary']}"[:120],
                               body=email_text(event), body_format=apprise.NotifyFormat.TEXT)


def plain_webhook(url: str) -> bool:
    """Whether `url` gets our JSON POST (an http(s) URL not of a known push service)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return False
    host = (parts.hostname or "").lower()
    return not any(host == h or host.endswith("." + h) for h in PUSH_HOSTS)


def channels(settings) -> list:
    """Every destination the settings name, email first."""
    out: list = [EmailChannel(settings)] if settings.alert_emails else []
    for url in settings.alert_urls:
        out.append(WebhookChannel(url) if plain_webhook(url) else AppriseChannel(url))
    return out
