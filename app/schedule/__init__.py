"""The schedule: which sections are due when (cron groups, slots, catch-up), one run at a time (the lock),
the checks a run still waits for (pending), and how far each run got (capacity, status)."""
