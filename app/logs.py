"""Logging for this service's own modules: one line per event on stderr (PM2 collects it), and no
secret in any line this process prints (issue 18).

SecretMask replaces every secret value the environment holds (app.settings.known_secrets) by
`***`: in the message, its arguments, and the traceback text. A filter on the root logger alone
would not do: logging runs a logger's filters only for records logged on that very logger, not for
those propagated from its children (psycopg.pool, huey.consumer, waitress). So `setup` also puts
the mask into the log-record factory, which every record of every logger passes through, before
any handler (ours, huey's, or logging's last-resort one) formats it; into sys.excepthook and
threading.excepthook; and sys.stderr itself is wrapped, for errors written there without logging
(Bottle writes a route's traceback to waitress's `wsgi.errors`, which is sys.stderr).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from typing import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Shorter values are not masked: they would mask ordinary letters in every line (a one-letter
# CRON_SECRET of a test), and no real secret is that short.
MIN_MASKED_LENGTH = 4

_installed: "SecretMask | None" = None


class SecretMask(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        # Longest first: a secret that contains another (a URL and its password) goes whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_MASKED_LENGTH}, key=len,
                              reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # logging reports its own formatting error
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatted now, once, so the handler prints the masked text (Formatter reuses it).
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class MaskedStream:
    """A text stream whose writes pass through the mask; everything else is the stream's own."""

    def __init__(self, stream, secret_mask: SecretMask):
        self._stream = stream
        self._mask = secret_mask

    def write(self, text):
        self._stream.write(self._mask.mask(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def mask(text: str) -> str:
    """`text` with every known secret masked (unchanged before `setup`)."""
    return _installed.mask(text) if _installed else text


def install_mask(secrets: Iterable[str]) -> SecretMask:
    """Mask `secrets` in every log record and uncaught error of this process (once per process)."""
    global _installed
    if _installed is not None:
        return _installed
    secret_mask = _installed = SecretMask(secrets)
    logging.getLogger().addFilter(secret_mask)
    make_record = logging.getLogRecordFactory()

    def masked_record(*args, **kwargs):
        record = make_record(*args, **kwargs)
        secret_mask.filter(record)
        return record

    logging.setLogRecordFactory(masked_record)
    logging.captureWarnings(True)  # warnings.warn from libraries: through logging, so masked

    def excepthook(exc_type, exc, tb):
        sys.stderr.write(secret_mask.mask("".join(traceback.format_exception(exc_type, exc, tb))))

    def thread_excepthook(args):
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        sys.stderr.write(f"Exception in thread {name}:\n")
        excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    sys.stderr = MaskedStream(sys.stderr, secret_mask)
    return secret_mask


def setup(level: int = logging.INFO) -> None:
    from app.settings import known_secrets

    install_mask(known_secrets())
    logger = logging.getLogger("app")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # huey's consumer configures its own logger; no duplicates
