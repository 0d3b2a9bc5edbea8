"""Benchmarks and fault injection: scripts that print figures (see bench/RESULTS.md)."""
