"""Laptop-side tools, not run on the server: `make dev` (dev) and `make cutover-check` (cutover)."""
