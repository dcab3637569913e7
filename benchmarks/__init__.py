"""Benchmarks for flask-asyncws: ``python -m benchmarks --help``."""
