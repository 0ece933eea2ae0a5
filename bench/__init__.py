"""Benchmarks run against a real server process (``python -m bench.upload``); see README.md."""
