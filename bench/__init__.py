"""Squall benchmarks: load generator, bare-Tornado baseline, orchestrator and report (``python -m bench``)."""
