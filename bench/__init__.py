"""Benchmarks that print figures: ./bench/run (see docs/benchmarks.md)."""
