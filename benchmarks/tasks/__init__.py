"""Benchmark task modules: each defines ``cases(full: bool) -> list[harness.Case]``."""
