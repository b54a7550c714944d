"""The web face: the Bottle routes (routes), the Prometheus page (metrics), waitress serving (serving)."""
