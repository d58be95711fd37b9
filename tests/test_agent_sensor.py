"""The agent sensor: intents in the inbox (and a landing folder no pipeline reads) become runs of
the `agent_proposals` asset; files it cannot parse move to inbox/rejected/ with the reason."""

from __future__ import annotations

import dagster as dg

from dagster_llmdata import load_project

from tests.agent_helpers import agent_project, pii_and_dups_source, write_intent
from tests.conftest import write_jsonl


def test_inbox_and_uncovered_landing_start_proposals_and_the_run_reports_them(tmp_path, prose, instance):
    root = agent_project(tmp_path / "proj", landing_root="landing", sample_docs=40)
    pii_and_dups_source(root / "landing" / "crawl", prose)
    write_jsonl(root / "landing" / "fresh" / "a.jsonl", [{"id": f"f{i}", "text": t} for i, t in enumerate(prose[20:30])])
    (root / "assets" / "crawl.yaml").write_text(
        "pipeline: crawl\nsources: [{name: web, landing: landing/crawl}]\nstages: [{name: raw, op: ingest}]\n")
    inbox = root / "agent" / "inbox"
    write_intent(inbox / "good.yaml", goal="a deduplicated corpus with no personal data", sources=["landing/crawl"], name="crawl_dedup")
    (inbox / "broken.yaml").write_text("goal: [unclosed\n")
    (inbox / "escape.yaml").write_text("goal: steal it\nsources: [a]\nrun: cat /etc/shadow\n")
    (inbox / "photo.png").write_bytes(b"\x89PNG\r\n")
    (inbox / "link.yaml").symlink_to("/etc/hostname")

    defs = load_project(root)
    sensor = defs.get_sensor_def("agent")
    result = sensor(dg.build_sensor_context(instance=instance, cursor=None))
    requests = result.run_requests
    intents = sorted(r.run_config["ops"]["agent_proposals"]["config"]["intent_path"] for r in requests)
    assert len(intents) == 2 and any(p.endswith("_good.yaml") for p in intents) and any("_landing_fresh.yaml" in p for p in intents)
    rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
    assert sum(n.endswith(".reason.txt") for n in rejected) == 4
    reasons = {n: (inbox / "rejected" / n).read_text() for n in rejected if n.endswith(".reason.txt")}
    assert any("invalid YAML" in r for r in reasons.values()) and any("run" in r for r in reasons.values())
    assert any("not a YAML file" in r for r in reasons.values()) and any("not a regular file" in r for r in reasons.values())
    assert not [p for p in inbox.iterdir() if p.is_file()]  # everything was taken out of the inbox
    # the next tick: nothing new (the landing folder is in the cursor)
    again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason) or not again.run_requests

    job = defs.resolve_job_def("agent_job")
    run = job.execute_in_process(run_config=next(r.run_config for r in requests if r.run_config["ops"]["agent_proposals"]["config"]["intent_path"].endswith("_good.yaml")),
                                 instance=instance)
    assert run.success
    [event] = run.get_asset_materialization_events()
    md = event.materialization.metadata
    assert md["status"].value == "verified" and md["name"].value == "crawl_dedup"
    assert "Round 0" in md["report"].value and "crawl_dedup" in md["proposals"].value
    assert (root / "assets" / "proposed" / "crawl_dedup.yaml").exists()
