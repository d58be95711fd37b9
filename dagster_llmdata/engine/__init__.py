"""Layer 5, materialising stages without Dagster: a chain of stages over one partition (locks,
fingerprints, skip, fused datatrove passes, ledgers counted from disk), standalone runs
(`llmdata op`, `apply_operator`), reports, and `dataset()` for reading a stage from Python."""
