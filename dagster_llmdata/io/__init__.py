"""Storage: Parquet datasets, Document <-> Arrow row conversion, datatrove reader/writer steps."""
