"""Layer 6, mixtures: algorithms (pure functions over state), planning and manifests, the stream
reader (`MixtureDataset`), training feedback (store, HF callback, TensorBoard reader), and the
mixture's own Dagster builders (the mixture asset, the training-feedback sensor)."""
