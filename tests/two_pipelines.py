"""A scratch project with two pipelines, `web` (landing folder -> quality_filtered) and `curated`,
whose source is web's `quality_filtered` stage: what the tests of pipelines reading each other
share."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .conftest import write_jsonl

WEB_YAML = textwrap.dedent(
    """\
    pipeline: web
    storage: data/pipelines
    executor: {kind: local, tasks: 1, workers: 1}
    sources:
      - {name: crawl, landing: landing/crawl}
    stages:
      - {name: raw, op: ingest}
      - {name: normalized, op: normalize}
      - {name: quality_filtered, op: gopher_quality, params: {min_doc_words: 50}}
    """
)

CURATED_YAML = textwrap.dedent(
    """\
    pipeline: curated
    storage: data/curated
    executor: {kind: local, tasks: 1, workers: 1}
    source: {pipeline: web, stage: quality_filtered}
    stages:
      - {name: from_web, op: ingest}
      - {name: redacted, op: pii_redact}
    """
)

PARTITION = "crawl/batch1.jsonl"


def two_pipelines(root: Path, prose: list[str], curated: str = CURATED_YAML) -> Path:
    """`root` as a project holding both specs and one landed file: ten prose documents (one with
    an e-mail address for the redaction downstream) and one too short for web's quality filter."""
    (root / "assets").mkdir(parents=True, exist_ok=True)
    (root / "sensors").mkdir(exist_ok=True)
    (root / "assets" / "web.yaml").write_text(WEB_YAML)
    (root / "assets" / "curated.yaml").write_text(curated)
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:9])]
    rows.append({"id": "mail", "text": prose[9] + "\nWrite to jane.doe@example.org for a copy."})
    rows.append({"id": "short", "text": "Too short to keep."})
    write_jsonl(root / "landing" / "crawl" / "batch1.jsonl", rows)
    return root
