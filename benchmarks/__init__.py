"""Benchmarks: pytest-benchmark micro-benchmarks and the side-by-side harness (compare)."""
