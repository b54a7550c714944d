"""Telling the operator: incidents from health (alerts, incident), the channels (notify), and the
dead man's switch ping after each slot (ping)."""
