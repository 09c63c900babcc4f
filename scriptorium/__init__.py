"""Scriptorium's composition root: CLI, launcher, test harness and benchmarks."""

__version__ = "0.1.0"
