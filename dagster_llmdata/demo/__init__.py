"""Top layer, demo and fixture code: the built-in sample corpus, planted-duplicate sets for tests
and benchmarks, `make demo`, the demo trainer and `dagster dev` as a context manager."""
