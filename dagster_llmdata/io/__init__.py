"""Layer 1, files on disk: Parquet datasets written in record batches, in-progress parts, the ledger
record that marks a partition complete, the folder layout, raw-file readers, datatrove reader and
writer steps, and the executors a stage runs on (datatrove's local pool or Ray). Knows nothing of
operators, specs or Dagster."""
