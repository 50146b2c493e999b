"""One-command benchmarks; see README.md here."""
