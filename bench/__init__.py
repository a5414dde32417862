"""Benchmarks of bp-stream against the raw kafka-python ceiling: ``python -m bench.run`` (``make bench``)."""
