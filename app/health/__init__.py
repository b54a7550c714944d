"""Health: the checks and their report (checks, report), its cache and public view for the web, and
the report shared through Redis with the worker's alerts (sharedreport)."""
