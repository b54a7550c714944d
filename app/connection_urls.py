"""DATABASE_URL and REDIS_URL checked before any library sees them (issue 18).

psycopg's parse errors (and psycopg_pool's warnings that repeat them) quote the whole connection
string, password included; redis-py's quote fragments of it. So a malformed URL stops start-up
here (app.settings turns InvalidURL into its SettingsError, exit 2), with a message that names the
variable and never shows the value, raised `from None` so that no traceback carries the library's
own message either.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


class InvalidURL(ValueError):
    """A malformed connection URL; the message names the variable, never the value."""


DATABASE_URL_FORM = ("expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME, special characters in "
                     "the password percent-encoded; the value is not shown")
REDIS_URL_FORM = ("expected redis://[USER]:PASSWORD@HOST:PORT/DB (rediss:// for TLS, or unix://), "
                  "special characters in the password percent-encoded; the value is not shown")


def _port_ok(value) -> bool:
    return str(value).isdigit() and 1 <= int(value) <= 65535


def check_database_url(dsn: str) -> None:
    """libpq's own parser (no connection), then what it lets through but cannot work."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise InvalidURL(f"DATABASE_URL is not a valid PostgreSQL connection string "
                         f"({DATABASE_URL_FORM})") from None
    if "@" in params.get("host", "") or "@" in params.get("dbname", ""):
        raise InvalidURL(f"DATABASE_URL has an unescaped @ or / in its password or user "
                         f"({DATABASE_URL_FORM})")
    ports = str(params.get("port", "")).split(",") if params.get("port") else []
    if not all(_port_ok(p) for p in ports if p):
        raise InvalidURL(f"DATABASE_URL has an invalid port ({DATABASE_URL_FORM})")
    if not str(params.get("connect_timeout", "0")).isdigit():
        raise InvalidURL(f"DATABASE_URL has an invalid connect_timeout ({DATABASE_URL_FORM})")


def check_redis_url(url: str) -> None:
    from redis.connection import parse_url

    try:
        parts = urlsplit(url)
        parse_url(url)
        port = parts.port  # ValueError when out of range
    except Exception:
        raise InvalidURL(f"REDIS_URL is not a valid Redis URL ({REDIS_URL_FORM})") from None
    if parts.scheme in ("redis", "rediss"):
        db = parts.path.strip("/")
        # redis-py silently falls back to db 0 for a path it cannot read, and reads a # in the
        # password as the start of a fragment: both would quietly use another database or password.
        if (db and not db.isdigit()) or parts.fragment or (port is not None and not _port_ok(port)):
            raise InvalidURL(f"REDIS_URL is not a valid Redis URL ({REDIS_URL_FORM})")


def passwords_in(url: str) -> list[str]:
    """The password inside a URL or key=value DSN, raw and percent-decoded (for the log mask)."""
    found = []
    try:
        found.append(urlsplit(url).password or "")
    except ValueError:
        pass
    if url and "://" not in url:  # key=value form
        try:
            from psycopg.conninfo import conninfo_to_dict

            found.append(str(conninfo_to_dict(url).get("password", "")))
        except Exception:
            pass
    return [v for p in found for v in (p, unquote(p))]
