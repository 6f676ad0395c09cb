"""Benchmarks (`make bench`): conversion and serving, side by side with the alternatives.

They print figures and write bench/RESULTS.md; they are not timed tests.
Run from the repository root: `python -m bench` (BENCH_QUICK=1 for a smoke run).
"""
