"""Settings: the only module that reads the environment.

Every process (worker, web, CLI) builds one frozen `Settings` at start-up. A missing required
variable stops start-up with one message naming every missing variable; there are no insecure
fallbacks for secrets. A malformed DATABASE_URL or REDIS_URL stops it too, naming the variable
and never its value (app.connection_urls); `known_secrets` lists the values app.logs masks in
every line this process prints. The names are the ones the Cloudflare deployment already uses,
so the operator's existing secrets carry over.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping
from urllib.parse import urlsplit

from app import connection_urls

# name -> what it is for (used in the error message and the health check).
REQUIRED = {
    "DATABASE_URL": "PostgreSQL DSN (Supabase session pooler on an IPv4 host)",
    "SCRAPER_URL": "base URL of the scraper service",
    "SCRAPER_SECRET_TOKEN": "bearer token for the scraper",
    "RESEND_API_KEY": "Resend API key",
    "NOTIFICATION_FROM_EMAIL": "sender address of notification emails",
    "NEXT_PUBLIC_SITE_URL": "public site URL used in email links",
    "CRON_SECRET": "bearer token for /api/cron",
    "SUPABASE_SERVICE_ROLE_KEY": "signing secret of unsubscribe tokens",
}

# name -> default. Documented in the README; change there too.
OPTIONAL = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "RESEND_API_URL": "https://api.resend.com",
    "SCRAPER_TIMEOUT_SECONDS": "30",
    "HUEY_READ_TIMEOUT_SECONDS": "300",
    "SEATWATCH_NAME": "seatwatch",
    "SEATWATCH_RELEASE": "dev",
    # "off": no consumer runs the schedule here on purpose (the cutover's zero-overlap step): the
    # worker starts as `--no-scheduler` and health does not ask for a scheduler's beat.
    "SEATWATCH_SCHEDULER": "on",
    # Dev mode (`make dev`, docs/dev.md). Anything but the defaults needs SEATWATCH_ENV=development:
    # a simulated scraper or an outbox folder in production would silently stop real emails.
    "SEATWATCH_ENV": "production",
    "SEATWATCH_SCRAPER": "http",
    "SEATWATCH_MAILER": "resend",
    "SEATWATCH_OUTBOX_DIR": "outbox",
    "SEATWATCH_SIM_PERIOD_SECONDS": "120",
    # Delivery audit rows (recipient, type, times) are deleted after this many days: the site's
    # privacy page removes notification records after one year (docs/delivery.md, retention).
    "SEATWATCH_AUDIT_RETENTION_DAYS": "365",
    # Telling the operator (app.alerting.alerts, app.alerting.ping): none set, nothing is sent.
    "SEATWATCH_ALERT_EMAIL": "",
    "SEATWATCH_ALERT_URLS": "",
    "SEATWATCH_ALERT_AFTER_SECONDS": "600",
    "SEATWATCH_PING_URL": "",
    # Which deployment of this service a check comes from (app.db.checkers): the deploy sets it to
    # the name and primary host of its inventory; unset, the name and this host.
    "SEATWATCH_INSTANCE": "",
}
ENVIRONMENTS = ("production", "development")
SWITCH_ON, SWITCH_OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")  # as the deploy reads them
SCRAPERS = ("http", "simulated")
MAILERS = ("resend", "outbox")


log = logging.getLogger(__name__)

# Used exactly as given, never stripped: the site signs and verifies unsubscribe tokens with the raw
# value, so a stripped key would make tokens the site rejects. Surrounding whitespace only warns.
VERBATIM = ("SUPABASE_SERVICE_ROLE_KEY",)


# What Resend accepts as a sender: `email@domain.tld` or `Name <email@domain.tld>`; anything else
# it refuses (422 invalid_from_address, or every email of a batch), so it must stop start-up.
_MAILBOX = r"[^@\s<>\"(),;:\[\]]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}"
_SENDER = re.compile(rf"(?:{_MAILBOX})|(?:[^<>@]*<{_MAILBOX}>)")


def valid_sender(value: str) -> bool:
    return bool(_SENDER.fullmatch(value.strip()))


class SettingsError(RuntimeError):
    """Raised when the environment cannot produce valid settings."""


def missing_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of required variables that are unset or blank (for the health check)."""
    env = os.environ if environ is None else environ
    return [name for name in REQUIRED if not env.get(name, "").strip()]


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)
    scraper_url: str
    scraper_secret_token: str = field(repr=False)
    resend_api_key: str = field(repr=False)
    notification_from_email: str
    site_url: str
    cron_secret: str = field(repr=False)
    unsubscribe_secret: str = field(repr=False)
    redis_url: str = field(repr=False, default=OPTIONAL["REDIS_URL"])
    resend_api_url: str = OPTIONAL["RESEND_API_URL"]
    scraper_timeout: float = 30.0
    huey_read_timeout: int = 300
    name: str = OPTIONAL["SEATWATCH_NAME"]
    release: str = OPTIONAL["SEATWATCH_RELEASE"]  # the deploy's release id, named in heartbeats
    environment: str = OPTIONAL["SEATWATCH_ENV"]
    scraper: str = OPTIONAL["SEATWATCH_SCRAPER"]  # "simulated": app.check.simscraper (development only)
    mailer: str = OPTIONAL["SEATWATCH_MAILER"]  # "outbox": app.mail.outbox, files not emails (development only)
    outbox_dir: str = OPTIONAL["SEATWATCH_OUTBOX_DIR"]
    sim_period: float = 120.0  # the simulated scraper's seats flip every this many seconds
    audit_retention_days: int = 365  # delivery audit rows older than this are deleted
    scheduler: bool = True  # SEATWATCH_SCHEDULER: whether a consumer here runs the schedule
    alert_emails: tuple[str, ...] = ()  # operator addresses, sent through Resend (app.alerting.alerts)
    # Notification URLs and the ping URL carry their own tokens (a webhook path, a check's UUID):
    # secrets, masked like the others.
    alert_urls: tuple[str, ...] = field(repr=False, default=())
    alert_after: float = 600.0  # how long a check stays not healthy before it alerts
    ping_url: str = field(repr=False, default="")  # the dead man's switch (app.alerting.ping)
    instance: str = ""  # SEATWATCH_INSTANCE; see `checker`

    @property
    def alerting(self) -> bool:
        """An alert channel is configured (app.alerting.alerts); without one nothing is evaluated."""
        return bool(self.alert_emails or self.alert_urls)

    @property
    def checker(self) -> str:
        """This deployment's name on the checks it records: SEATWATCH_INSTANCE, else name@host."""
        return self.instance or f"{self.name}@{hostname()}"

    @property
    def key_prefix(self) -> str:
        """Prefix of every Redis key this service owns (besides huey's own)."""
        return f"{self.name}:"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        missing = missing_variables(env)
        if missing:
            raise SettingsError(
                "missing required environment variable(s): " + ", ".join(missing)
            )

        def opt(name: str) -> str:
            return env.get(name, "").strip() or OPTIONAL[name]

        scraper_timeout = _number(opt, "SCRAPER_TIMEOUT_SECONDS", float)
        read_timeout = _number(opt, "HUEY_READ_TIMEOUT_SECONDS", int)
        if not 0 < scraper_timeout <= 120:
            raise SettingsError("SCRAPER_TIMEOUT_SECONDS must be in (0, 120]")
        if not 1 <= read_timeout <= 300:
            raise SettingsError("HUEY_READ_TIMEOUT_SECONDS must be in [1, 300]")

        dev = _dev_choices(opt)
        sim_period = _number(opt, "SEATWATCH_SIM_PERIOD_SECONDS", float)
        if not 1 <= sim_period <= 86400:
            raise SettingsError("SEATWATCH_SIM_PERIOD_SECONDS must be in [1, 86400]")

        database_url = env["DATABASE_URL"].strip()
        try:  # names the variable, never the value (app.connection_urls)
            connection_urls.check_database_url(database_url)
            connection_urls.check_redis_url(opt("REDIS_URL"))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        scheduler = opt("SEATWATCH_SCHEDULER").lower()
        if scheduler not in SWITCH_ON + SWITCH_OFF:
            raise SettingsError("SEATWATCH_SCHEDULER must be on or off")

        scraper_url = env["SCRAPER_URL"].strip().rstrip("/")
        site_url = env["NEXT_PUBLIC_SITE_URL"].strip().rstrip("/")
        for name, url in (("SCRAPER_URL", scraper_url), ("NEXT_PUBLIC_SITE_URL", site_url)):
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"{name} must start with http:// or https://")
        for name in VERBATIM:
            if env[name] != env[name].strip():
                log.warning("%s has leading or trailing whitespace; it is used as given, byte for "
                            "byte, as the site uses it (fix it in both places if it is a mistake)", name)
        sender = env["NOTIFICATION_FROM_EMAIL"].strip()
        if not valid_sender(sender):  # never the value: the message goes to logs and terminals
            raise SettingsError("NOTIFICATION_FROM_EMAIL must be `email@domain.tld` or "
                                "`Name <email@domain.tld>`, as Resend accepts it")
        try:
            retention_days = int(opt("SEATWATCH_AUDIT_RETENTION_DAYS"))
        except ValueError:
            raise SettingsError("SEATWATCH_AUDIT_RETENTION_DAYS must be a whole number of days") from None
        if not 1 <= retention_days <= 3650:
            raise SettingsError("SEATWATCH_AUDIT_RETENTION_DAYS must be in [1, 3650]")

        alerting = _alert_settings(env, opt)

        return cls(
            database_url=database_url,
            scraper_url=scraper_url,
            scraper_secret_token=env["SCRAPER_SECRET_TOKEN"].strip(),
            resend_api_key=env["RESEND_API_KEY"].strip(),
            notification_from_email=sender,
            site_url=site_url,
            cron_secret=env["CRON_SECRET"].strip(),
            unsubscribe_secret=env["SUPABASE_SERVICE_ROLE_KEY"],
            redis_url=opt("REDIS_URL"),
            resend_api_url=opt("RESEND_API_URL").rstrip("/"),
            scraper_timeout=scraper_timeout,
            huey_read_timeout=read_timeout,
            name=opt("SEATWATCH_NAME"),
            release=opt("SEATWATCH_RELEASE"),
            **dev,
            outbox_dir=opt("SEATWATCH_OUTBOX_DIR"),
            sim_period=sim_period,
            audit_retention_days=retention_days,
            scheduler=scheduler in SWITCH_ON,
            instance=_instance(opt),
            **alerting,
        )

    def secret_values(self) -> list[str]:
        """Values that must never appear in a response body or log line."""
        return [
            v
            for v in (
                self.database_url,
                self.scraper_secret_token,
                self.resend_api_key,
                self.cron_secret,
                self.unsubscribe_secret,
                self.redis_url,
                self.ping_url,
                *self.alert_urls,
            )
            if v
        ]

    def redact(self, text: str) -> str:
        """`text` with every secret value, and the password inside a URL setting, masked."""
        secrets = self.secret_values()
        for url in (self.database_url, self.redis_url):
            try:
                secrets.append(urlsplit(url).password or "")
            except ValueError:
                pass
        for value in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(value, "***")
        return text


# Every variable whose value is a secret (or holds one): masked in every log line and error.
SECRET_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SCRAPER_SECRET_TOKEN", "RESEND_API_KEY",
                    "CRON_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "REDIS_PASSWORD",
                    "SEATWATCH_ALERT_URLS", "SEATWATCH_PING_URL")
# Lists of URLs, each carrying its own token: every member is masked on its own too.
SECRET_URL_LISTS = ("SEATWATCH_ALERT_URLS",)


def _instance(opt) -> str:
    if len(value := opt("SEATWATCH_INSTANCE")) > 200 or not all(c.isprintable() and not c.isspace() for c in value):
        raise SettingsError("SEATWATCH_INSTANCE must be at most 200 printable characters without spaces")
    return value


def _number(opt, name: str, kind: type):
    """A numeric setting; the error names the variable and never quotes the value (Python's own
    ValueError would, and it reaches logs and terminals)."""
    try:
        return kind(opt(name))
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if kind is int else ''}number") from None


def known_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in the environment, read leniently (they must be masked even when the
    settings do not validate): each value as given and stripped, and the password inside each URL,
    raw and percent-decoded (libpq and redis-py report the decoded one)."""
    env = os.environ if environ is None else environ
    values: set[str] = set()
    for name in SECRET_VARIABLES:
        raw = env.get(name, "")
        values.update((raw, raw.strip()))
    for name in ("DATABASE_URL", "REDIS_URL"):
        values.update(connection_urls.passwords_in(env.get(name, "").strip()))
    for name in SECRET_URL_LISTS:
        values.update(u.strip() for u in env.get(name, "").replace(",", " ").split())
    return sorted(filter(None, values), key=len, reverse=True)


def _alert_settings(env: Mapping[str, str], opt) -> dict:
    """SEATWATCH_ALERT_* and SEATWATCH_PING_URL, validated; errors name the variable, never the
    value (a URL carries its token)."""
    emails = tuple(a.strip() for a in env.get("SEATWATCH_ALERT_EMAIL", "").split(",") if a.strip())
    if any("@" not in a for a in emails):
        raise SettingsError("SEATWATCH_ALERT_EMAIL must be email addresses, comma separated")
    urls = tuple(u for u in env.get("SEATWATCH_ALERT_URLS", "").replace(",", " ").split())
    if any("://" not in u for u in urls):
        raise SettingsError("SEATWATCH_ALERT_URLS must be URLs (scheme://...), space or comma "
                            "separated")
    others = [u for u in urls if not u.lower().startswith(("http://", "https://"))]
    if others and importlib.util.find_spec("apprise") is None:  # looked up, not imported
        raise SettingsError("SEATWATCH_ALERT_URLS: URLs other than http(s) need Apprise "
                            "(pip install apprise), which is not installed")
    try:
        after = float(opt("SEATWATCH_ALERT_AFTER_SECONDS"))
    except ValueError:
        raise SettingsError("SEATWATCH_ALERT_AFTER_SECONDS must be a number of seconds") from None
    if not 0 <= after <= 86400:
        raise SettingsError("SEATWATCH_ALERT_AFTER_SECONDS must be in [0, 86400]")
    ping = env.get("SEATWATCH_PING_URL", "").strip().rstrip("/")
    if ping and not ping.startswith(("http://", "https://")):
        raise SettingsError("SEATWATCH_PING_URL must start with http:// or https://")
    return {"alert_emails": emails, "alert_urls": urls, "alert_after": after, "ping_url": ping}


def _dev_choices(opt) -> dict:
    """SEATWATCH_ENV, SEATWATCH_SCRAPER and SEATWATCH_MAILER, validated: the dev stand-ins only
    when the environment is explicitly marked development."""
    choices = {"environment": opt("SEATWATCH_ENV"), "scraper": opt("SEATWATCH_SCRAPER"),
               "mailer": opt("SEATWATCH_MAILER")}
    for value, allowed, name in zip(choices.values(), (ENVIRONMENTS, SCRAPERS, MAILERS),
                                    ("SEATWATCH_ENV", "SEATWATCH_SCRAPER", "SEATWATCH_MAILER")):
        if value not in allowed:
            raise SettingsError(f"{name} must be one of: {', '.join(allowed)}")
    stand_ins = [f"SEATWATCH_SCRAPER={choices['scraper']}"] if choices["scraper"] != "http" else []
    if choices["mailer"] != "resend":
        stand_ins.append(f"SEATWATCH_MAILER={choices['mailer']}")
    if stand_ins and choices["environment"] != "development":
        raise SettingsError(
            f"refusing dev settings ({', '.join(stand_ins)}) in the {choices['environment']} "
            "environment: they would stop real checks or emails; set SEATWATCH_ENV=development "
            "only on a development machine")
    return choices


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings.from_env()


def hostname() -> str:
    """This host's name, for lock holders and heartbeats (not a secret). SEATWATCH_HOSTNAME
    overrides it: two consumers on one machine (the tests) beat as two hosts."""
    return os.environ.get("SEATWATCH_HOSTNAME") or os.uname().nodename


def environment_with(changes: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `changes` on top, for a child process (`make dev`)."""
    return {**os.environ, **changes}


def declared_environment() -> str:
    """SEATWATCH_ENV as set ("" when unset): `make dev` refuses to start where it says production."""
    return os.environ.get("SEATWATCH_ENV", "").strip()
