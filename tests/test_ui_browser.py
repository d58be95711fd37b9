"""The Dagster UI as a person sees it: `dagster dev` on the default project (its assets/ specs over
a small sample corpus, one partition materialised through `llmdata materialize`), opened in
headless Chromium (Debian's package, driven by Playwright over the DevTools protocol; nothing is
downloaded). The first-run community dialog is dismissed; the pipeline's graph shows every stage,
the stage page shows its lineage and its materialisation's metadata (row counts, drops by reason,
the sample table). Screenshots go to bench/results/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.processes import dagster_dev, free_port

pytestmark = pytest.mark.slow  # a materialisation, dagster dev and a browser: ~3 min on 2 shared cores
REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO / "bench" / "results"
PARTITION = "sample/docstrings.jsonl"
STAGES = ["raw", "extracted", "normalized", "english", "deduplicated", "near_deduplicated", "repetiti…_filtered",
          "quality_filtered", "web_filtered", "redacted", "shards", "edu_scored", "edu_selected"]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s")


@pytest.fixture()
def default_project(tmp_path: Path) -> Path:
    """The repo's own pipeline specs over a 300-document sample corpus, one partition materialised
    up to `deduplicated` (the judge branch is left unmaterialised: the graph shows it all the same)."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "assets", root / "assets")
    env = {**os.environ, "DAGSTER_HOME": str(root / ".dagster_home")}
    subprocess.run([str(BIN / "llmdata"), "sample-corpus", str(root / "data/landing/sample"), "--docs", "300"],
                   check=True, capture_output=True, env=env)
    out = subprocess.run([str(BIN / "llmdata"), "materialize", "sample", "--partition", PARTITION, "--stage", "deduplicated",
                          "--project", str(root)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def _stage_with_drops(root: Path) -> tuple[str, str, list[str]]:
    """(stage, its upstream, its drop reasons): the last materialised stage that dropped documents."""
    import json

    report = json.loads(subprocess.run([str(BIN / "llmdata"), "report", "sample", "--json", "--project", str(root)],
                                       check=True, capture_output=True, text=True).stdout)
    rows = [r for r in report["stages"] if r["partitions"] and r["rejected"]]
    assert rows, report
    names = [r["stage"] for r in report["stages"]]
    stage = rows[-1]["stage"]
    return stage, names[names.index(stage) - 1], sorted(rows[-1]["rejected"])


@pytest.fixture()
def dagster_ui(default_project: Path, tmp_path: Path):
    port = free_port()
    with dagster_dev(default_project, default_project / ".dagster_home", port, tmp_path / "dagster_dev.log"):
        _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
        yield f"http://127.0.0.1:{port}"


def _dismiss_first_run_dialog(page) -> bool:
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=15_000)
    except Exception:
        return False  # not shown (already dismissed in this browser profile)
    skip.click()
    page.get_by_text("Join the Dagster community").wait_for(state="hidden", timeout=10_000)
    return True


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (.ci/run installs it)")
def test_asset_graph_lineage_and_metadata_in_a_real_browser(default_project, dagster_ui):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dagster_ui}/locations/llmdata/asset-groups/sample/lineage", timeout=120_000)
            assert _dismiss_first_run_dialog(page), "the first-run community dialog did not show on a fresh browser"

            # the group's graph: every stage is a node, joined by edges
            graph = page.locator("body")
            for stage in ("raw", "deduplicated", "edu_selected", "shards"):
                page.get_by_text(stage, exact=True).first.wait_for(timeout=60_000)
            text = graph.inner_text()
            assert all(stage in text for stage in STAGES), text[:2000]
            assert page.locator("svg path").count() >= len(STAGES) - 1  # the lineage edges
            page.screenshot(path=str(SCREENSHOTS / "ui_asset_graph.png"))

            # a stage that dropped documents: lineage to its upstream and its materialisation's metadata
            stage, upstream, reasons = _stage_with_drops(default_project)
            page.goto(f"{dagster_ui}/assets/sample/{stage}?partition={PARTITION.replace('/', '%2F')}", timeout=120_000)
            page.get_by_text(f"dropped/{reasons[0]}").first.wait_for(timeout=60_000)
            wanted = ("n_in", "n_out", "n_rejected", *(f"dropped/{r}" for r in reasons), "rejected_examples", "sample",
                      "Upstream assets", f"sample / {upstream}", "Downstream assets")
            deadline = time.time() + 60  # the lineage sidebar fills in after the metadata
            while True:
                text = page.locator("body").inner_text()
                missing = [w for w in wanted if w not in text]
                if not missing or time.time() > deadline:
                    break
                page.wait_for_timeout(1000)
            assert not missing, f"{missing} not on the page"
            sample_table = page.locator("table").filter(has_text="domain").last
            assert sample_table.locator("tr").count() >= 3  # the header and sample rows
            page.set_viewport_size({"width": 1600, "height": 1400})
            page.get_by_text(f"dropped/{reasons[0]}").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / "ui_stage_metadata.png"))
        finally:
            browser.close()
