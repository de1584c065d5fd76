"""Benchmarks: run each as ``python -m bench.bench_<area>``."""
