"""One section check: read the scraper (through the circuit breaker, or the simulated scraper in dev),
compare with the stored state (changes), and hand the emails it owes to app.mail (run)."""
