"""Benchmarks: the retry layer beside stock Channels, Celery and Dramatiq.

One command per scenario (``python -m bench.throughput``, ``bench.retry``,
``bench.latency``, ``bench.progress``, ``bench.growth``); each starts its own
Redis and databases on 127.0.0.1 and prints a table. See docs/benchmarks.md.
"""
