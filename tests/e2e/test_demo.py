"""`make demo`'s command on a small sample corpus, in a copy of this project's assets/ and sensors/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_demo_materialises_the_default_pipeline(tmp_path, monkeypatch):
    for folder in ("assets", "sensors"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / ".dagster_home")}
    res = subprocess.run([str(Path(sys.executable).parent / "llmdata"), "demo", "--project", str(tmp_path), "--docs", "1500"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "failed: none" in out and "make ui" in out
    assert "mixture sample_mix v" in out and "FAILED" not in out  # the default mixture over the shards
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha() and len(line.split()) >= 6}
    raw, shards = rows["raw"], rows["shards"]
    assert int(raw[2]) >= 1500 and int(raw[5]) >= 5  # the broken landing file's lines are quarantined
    assert 0 < int(shards[3]) < int(raw[3])
    assert "exact_duplicate=" in rows["deduplicated"][-1] and "near_duplicate=" in rows["near_deduplicated"][-1]
    # the instance `make ui` opens holds the materialisations
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    instance = dg.DagsterInstance.get()
    try:
        assert instance.get_latest_materialization_event(dg.AssetKey(["sample", "shards"])) is not None
    finally:
        instance.dispose()
