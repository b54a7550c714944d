"""The house's shape, read from the source (tests/importgraph.py): no circle of imports between
modules of app/ and roles/, none between app's parts (its subpackages and top-level modules), the
huey instance module reaching no task, no module over about 350 lines. `python -m tests.importgraph`
prints the graph and the sizes."""

from __future__ import annotations

from tests import importgraph

MAX_LINES = 360  # "about 350": a module that reads in one sitting


def test_no_circle_of_imports_between_modules():
    assert importgraph.cycles(importgraph.graph()) == []


def test_no_circle_between_apps_parts():
    parts = importgraph.part_graph(importgraph.graph())
    assert {"app.schedule", "app.check", "app.mail", "app.queue", "app.health", "app.web"} <= set(parts)
    assert importgraph.cycles(parts) == []


def test_the_lower_parts_never_import_the_upper_ones():
    """Settings, keys, time and the database are the ground floor; the queue and the check's and
    mail's parts never reach for the wiring (services, tasks), the web or the command line."""
    parts = importgraph.part_graph(importgraph.graph())
    ground = {"app.settings", "app.connection_urls", "app.keys", "app.timeutil", "app.db", "app.section"}
    wiring = {"app.services", "app.tasks", "app.web", "app.__main__", "app.laptop"}
    for low in ground:
        assert parts.get(low, set()) <= ground, low
    for part in ("app.queue", "app.schedule", "app.check", "app.mail", "app.health", "app.alerting"):
        assert not parts[part] & wiring, part


def test_the_huey_instance_module_reaches_no_task():
    edges = importgraph.graph()
    assert "app.queue.instance" in edges
    assert "app.tasks" not in importgraph.transitive(edges, "app.queue.instance")


def test_a_cycle_is_found_when_there_is_one():
    assert importgraph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_about_350_lines():
    sizes = importgraph.sizes()
    assert "app/db/__init__.py" in sizes
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_make_help_lists_every_target():
    """Every target of the Makefile's .PHONY list has a line in `make help`."""
    import re
    import subprocess
    from pathlib import Path

    makefile = Path(__file__).resolve().parent.parent / "Makefile"
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile.read_text(), re.M).group(1)
    targets = set(phony.replace("\\\n", " ").split()) - {"help"}
    shown = subprocess.run(["make", "-s", "-f", str(makefile), "help"], capture_output=True, text=True,
                           check=True).stdout
    listed = {line.split()[1] for line in shown.splitlines() if line.startswith("make ")}
    assert targets <= listed, sorted(targets - listed)
