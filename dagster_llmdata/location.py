"""The `llmdata` code location: workspace.yaml points here. The project root is
$LLMDATA_PROJECT or the working directory."""

from dagster_llmdata.definitions import load_project

defs = load_project()
