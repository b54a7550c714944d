"""bench/_memfig.py reads what a process really takes (PSS, USS, anon/file) from a real /proc."""

from __future__ import annotations

import time

import pytest

from bench import _memfig

HOLD_MB = 40
# A child that dirties HOLD_MB of anonymous memory (private to it), says so, and waits.
CHILD = (f"import sys; b = bytearray({HOLD_MB} * 1000 * 1000); b[::4096] = b'x' * len(b[::4096]); "
         "print('ready', flush=True); sys.stdin.read()")


@pytest.fixture
def children(holding_child):
    return lambda: holding_child(CHILD)


def test_a_real_process_figures_add_up(children):
    fig = _memfig.of_pid(children().pid)
    assert fig["rss"] >= HOLD_MB
    assert fig["uss"] <= fig["pss"] <= fig["rss"]
    # the buffer is private anonymous memory: in USS, in the anon parts, not in the file parts
    assert fig["anon"] >= HOLD_MB and fig["pss_anon"] >= HOLD_MB and fig["rss_anon"] >= HOLD_MB
    assert fig["uss"] >= HOLD_MB
    assert fig["pss_file"] < fig["rss_file"] + 0.01
    assert abs(fig["pss"] - (fig["pss_anon"] + fig["pss_file"] + fig.get("pss_shmem", 0))) < 0.1


def test_shared_pages_count_once_in_the_pss_sum(children):
    """Two Pythons map the same interpreter and libraries: the RSS sum counts those pages twice,
    the PSS sum once, so the PSS sum is the smaller (and each PSS below its RSS)."""
    a, b = children(), children()
    time.sleep(0.1)
    figs = [_memfig.of_pid(a.pid), _memfig.of_pid(b.pid)]
    stack = _memfig.total(figs)
    assert stack["rss"] == pytest.approx(figs[0]["rss"] + figs[1]["rss"])
    assert all(f["pss"] < f["rss"] for f in figs)
    assert stack["pss"] < stack["rss"] - 1  # at least 1 MB of shared file pages
    assert "PSS" in _memfig.brief(stack)
    # alone: the anonymous memory of both plus one copy of the file pages they map
    assert stack["alone"] == pytest.approx(stack["rss_anon"] + max(f["rss_file"] for f in figs))
    assert stack["alone"] < stack["rss"]


def test_what_is_not_a_rollup_is_refused():
    with pytest.raises(ValueError, match="not a /proc"):
        _memfig.parse("cat: /proc/1/smaps_rollup: Permission denied\n")
    with pytest.raises(ValueError, match="unexpected Pss"):
        _memfig.parse("Rss: 10 kB\nPss: 10 MB\n")
