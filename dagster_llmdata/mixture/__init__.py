"""Layer 6, mixtures: algorithms (pure functions over state), planning and manifests, the stream
reader (`MixtureDataset`), training feedback (store, HF callback, TensorBoard reader), and the
mixture's own Dagster builders (the mixture asset, the training-feedback sensor)."""


def __getattr__(name: str):
    # lazily, so importing a submodule does not load the planner
    if name == "with_weights":
        from dagster_llmdata.mixture.reweigh import with_weights

        return with_weights
    raise AttributeError(name)


__all__ = ["with_weights"]
