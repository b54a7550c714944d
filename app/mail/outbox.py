"""The dev outbox: emails written to a folder as .html and .txt instead of sent through Resend.

Same `send_batch(emails, idempotency_key)` as app.mail.mailer.Mailer, returning one id per email.
Like Resend, a key already sent replays its first answer (the ids) and writes nothing again, so
the delivery sweep behaves here as it does against Resend; and like Resend's permissive batch
validation, an email with an invalid `to` or `from` is refused by index, the rest are written.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from app.mail.mailer import MAX_BATCH, SendResult
from app.settings import valid_sender

INVALID_FROM = ("Invalid `from` field. The email address needs to follow the `email@example.com` "
                "or `Name <email@example.com>` format.")
INVALID_TO = "Invalid `to` field. The email address needs to follow the `email@example.com` format."


def refusal(email: dict) -> str | None:
    """Why Resend would refuse this email, if it would."""
    if not valid_sender(str(email.get("from") or "")):
        return INVALID_FROM
    if not all(valid_sender(a) and "<" not in a for a in email.get("to") or [""]):
        return INVALID_TO
    return None


class Outbox:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()  # one writer per process at a time: the replay check is racy otherwise

    def send_batch(self, emails: Sequence[dict], idempotency_key: str) -> SendResult:
        if not 0 < len(emails) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} emails, not {len(emails)}")
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        sent = self.directory / ".sent" / f"{digest}.json"
        with self._lock:
            if sent.exists():
                answer = json.loads(sent.read_text())
                if isinstance(answer, list):  # written before refusals were kept
                    answer = {"ids": answer, "errors": {}}
                return SendResult(ids=answer["ids"],
                                  errors={int(i): r for i, r in answer["errors"].items()})
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            ids: list[str | None] = []
            errors: dict[int, str] = {}
            for i, email in enumerate(emails):
                reason = refusal(email)
                if reason:
                    errors[i] = reason
                    ids.append(None)
                    continue
                email_id = f"outbox-{digest}-{i}"
                to = re.sub(r"[^A-Za-z0-9@._-]", "_", ",".join(email["to"]))
                base = f"{stamp}-{to}-{digest}-{i}"  # not with_suffix: addresses contain dots
                header = f"Subject: {email['subject']}\nFrom: {email['from']}\nTo: {', '.join(email['to'])}\n"
                (self.directory / f"{base}.html").write_text(email["html"], encoding="utf-8")
                (self.directory / f"{base}.txt").write_text(f"{header}\n{email['text']}", encoding="utf-8")
                ids.append(email_id)
            sent.parent.mkdir(exist_ok=True)
            sent.write_text(json.dumps({"ids": ids, "errors": errors}))
            return SendResult(ids=ids, errors=errors)
