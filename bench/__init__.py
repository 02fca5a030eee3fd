"""Benchmarks of the callpulse pipeline: `python bench/run.py [--quick]` prints figures and rewrites BENCHMARKS.md.

Not tests: nothing here asserts a timing. Public entry point: `bench.run.main`.
"""
