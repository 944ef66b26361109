"""Benchmarks: each prints one JSON line and compares with a baseline measured in the same run."""
