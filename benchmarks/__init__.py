"""Benchmarks: `python -m benchmarks.cpu` (make bench) and `python -m benchmarks.gpu`."""
