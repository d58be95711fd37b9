from dagster_llmdata.cli.main import main

__all__ = ["main"]
