"""Benchmark harness behind ``sonoedge bench``: interleaved timing, anchors from the same run,
markdown + JSON tables. The pytest-benchmark twins live in ``benchmarks/``."""

from sdk.bench.timing import Row, Table, compare, machine_info, summarize

__all__ = ["Row", "Table", "compare", "machine_info", "summarize"]
