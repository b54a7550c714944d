"""The operator's state commands (app/state_commands.py): dead letters acknowledged and dropped,
one time format, `status` exiting non-zero when not healthy, `--version`."""

from __future__ import annotations

import json
import logging
import re

import pytest

from app.__main__ import main
from app.health import checks

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_a_dead_letter_can_be_dropped_and_health_clears(services, queue, capsys):
    """A section that can never be checked (a cancelled class) kept health at 503 until requeued:
    the operator can now drop it, by id or all, logged and counted."""
    services.heartbeat.beat()
    services.dead_letters.add("2261", "12431", "scraper: HTTP 500 not found", attempts=4)
    services.dead_letters.add("2261", "12433", "scraper: HTTP 500 not found", attempts=4)
    assert checks.run_checks(services)["checks"]["queue"]["status"] == "degraded"
    assert main(["dead-letters"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["class_nbr"] for e in listed] == ["12433", "12431"]
    assert all(ISO.match(e["failed_at"]) and len(e["id"]) == 12 for e in listed)

    assert main(["dead-letters", "--drop", "nosuchid0000"]) == 1  # a typo drops nothing
    assert json.loads(capsys.readouterr().out)["dropped"] == []
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # app's logger does not propagate to pytest's capture
    logging.getLogger("app.queue.deadletters").addHandler(handler)
    try:
        assert main(["dead-letters", "--drop", listed[0]["id"]]) == 0
    finally:
        logging.getLogger("app.queue.deadletters").removeHandler(handler)
    out = json.loads(capsys.readouterr().out)
    assert [e["class_nbr"] for e in out["dropped"]] == ["12433"] and out["dropped_ever"] == 1
    assert [r.getMessage() for r in records] == [
        f"dead letter {listed[0]['id']} dropped by the operator: 2261/12433 (scraper: HTTP 500 not found)"]
    assert [e["class_nbr"] for e in services.dead_letters.list()] == ["12431"]
    assert main(["dead-letters", "--all"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_ever"] == 2
    assert services.dead_letters.count() == 0
    assert checks.run_checks(services)["checks"]["queue"]["status"] == "healthy"
    assert queue.pending_count() == 0  # dropped, not requeued


def test_heartbeat_prints_iso_times(services, capsys):
    services.heartbeat.beat()
    assert main(["heartbeat"]) == 0
    [beat] = json.loads(capsys.readouterr().out)["beats"]
    assert ISO.match(beat["at"]) and ISO.match(beat["started"])


def test_status_exits_non_zero_when_not_healthy(services, queue, capsys):
    assert main(["status"]) == 1  # no scheduler beats: unhealthy
    assert capsys.readouterr().out.splitlines()[-2].startswith("status unhealthy: scheduler dead")
    services.heartbeat.beat()
    assert main(["status"]) == 0


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.match(r"^seatwatch \d+\.\d+\.\d+ \(release .+\)$", capsys.readouterr().out.strip())


def test_one_spelling_of_the_breaker_state_everywhere(services, queue, capsys):
    services.heartbeat.beat()
    assert main(["breaker", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "CLOSED"
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["circuit_breaker"] == "CLOSED"
    assert checks.run_checks(services)["checks"]["circuit_breaker"]["state"] == "CLOSED"


def test_health_names_the_mailer_that_really_sends(services, monkeypatch):
    import dataclasses

    assert checks.run_checks(services)["checks"]["email"]["provider"] == "resend"
    monkeypatch.setattr(services, "settings", dataclasses.replace(services.settings, mailer="outbox"))
    assert checks.run_checks(services)["checks"]["email"]["provider"] == "outbox"
