"""A Redis restored from a snapshot taken after the sentinel's last probe (issue 26): the probe's
token survives, the 14:00 run's checks and marker do not. Noticed within 5 minutes, and the slot
runs again. Restarts this test run's own Redis (TEST_REDIS_URL) from an RDB file, as
tests/test_schedule.py's restart tests do, with the real cron run and catch-up."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit

from app.queue.instance import huey
from app.schedule.sentinel import DataSentinel
from tests.test_schedule import _pings, at, ran, runner, slot_ran, watched, wait_for  # noqa: F401


def restart_from_snapshot(services, directory: str, dbfilename: str) -> None:
    """An OOM kill (no save at exit) and a start from the snapshot on disk."""
    port = urlsplit(os.environ["REDIS_URL"]).port
    try:
        services.redis.shutdown(nosave=True)
    except Exception:
        pass  # the connection drops as it stops
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no", "--dir", directory,
                    "--dbfilename", dbfilename], check=True, stdout=subprocess.DEVNULL)
    wait_for(lambda: _pings(services), 10, "Redis to be back")


def test_a_redis_restored_from_a_snapshot_after_the_probe_runs_the_slot_again(
        services, queue, watched, tmp_path):  # noqa: F811
    # This run's Redis, started again to save its snapshots here (CONFIG SET dir is refused), and
    # in its own directory again at the end (tmp_path goes; a later restart must find its dir).
    home = services.redis.config_get("dir")["dir"]
    restart_from_snapshot(services, str(tmp_path), "dump.rdb")
    try:
        snapshot_restore(services, tmp_path)
    finally:
        restart_from_snapshot(services, home, f"seatwatch-test-{os.getpid()}-absent.rdb")


def snapshot_restore(services, tmp_path) -> None:
    sentinel = DataSentinel(services.redis, services.keys.prefix + "sentinel:test")
    slot_ran(services, "2026-11-30T13:even")
    slot_ran(services, "2026-11-30T13:odd")
    sched = runner(services, lost=sentinel.lost)
    assert ran(sched.tick(at(13, 58, 30))) == []  # the probe writes its token
    services.redis.save()  # the RDB save at 13:59
    assert ran(sched.tick(at(14, 0, 20))) == ["2026-11-30T14:even"]
    even = huey.pending_count()
    assert even == 2  # 12430 and 12432 wait on the queue
    restart_from_snapshot(services, str(tmp_path), "dump.rdb")  # killed at 14:00:40
    assert huey.pending_count() == 0  # the 14:00 run's checks went with it, and its marker
    rerun_at = None
    for minute in range(1, 6):
        if ran(sched.tick(at(14, minute, 20))):
            rerun_at = minute
            break
    assert rerun_at is not None and rerun_at <= 5  # noticed within 5 minutes of the loss
    assert huey.pending_count() == even  # the slot's checks are back on the queue
    # Once: the next ticks leave it alone, and the 13:xx slots whose markers survived never reran.
    assert ran(sched.tick(at(14, 10))) == [] and ran(sched.tick(at(14, 20))) == []
    assert huey.pending_count() == even
