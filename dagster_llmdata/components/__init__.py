"""Top layer beside `definitions`: every spec kind as a Dagster Component (`dg list components`
lists them through the package's `dagster_dg_cli.registry_modules` entry point), each with a
scaffolder for `dg scaffold defs`."""

from dagster_llmdata.components.kinds import AgentComponent, MixtureComponent, PipelineComponent

__all__ = ["AgentComponent", "MixtureComponent", "PipelineComponent"]
