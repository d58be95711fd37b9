"""Layer 6, every Dagster object of a pipeline: the stage-to-asset translator, the asset body, the
event builder, the landing sensor, schedules and freshness, partition removal, resources, the
`specs` asset and the Components. Built from specs; `dagster_llmdata.definitions` assembles them."""
