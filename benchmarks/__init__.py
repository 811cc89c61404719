"""The benchmark suite: this provider side by side with the official providers and a raw floor.

Run it with ``python -m benchmarks`` (``--quick`` for a smoke run); see ``benchmarks/README.md``.
"""
