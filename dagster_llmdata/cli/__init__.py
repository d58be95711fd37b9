"""Top layer, the `llmdata` command: each subcommand module adds its own parsers and loads its
implementation when run, so `llmdata --help` stays quick."""

from dagster_llmdata.cli.main import main

__all__ = ["main"]
