"""`python -m dagster_llmdata.cli` runs the `llmdata` command."""

import sys

from dagster_llmdata.cli.main import main

sys.exit(main())
