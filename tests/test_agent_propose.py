"""Intent -> profile -> deterministic plan -> static + dynamic verification -> proposal, on real
text with planted personal data and duplicates; the CLI prints one JSON object; approve and
reject move the files and keep a record."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from dagster_llmdata.agent.agent import propose
from dagster_llmdata.spec.agent import agent_config
from dagster_llmdata.spec.intent import load_intent
from dagster_llmdata.agent.profile import pii_hits, profile_texts
from dagster_llmdata.agent.proposal import approve
from dagster_llmdata.cli.main import main
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.definitions import read_project

from tests.agent_helpers import agent_project, pii_and_dups_source, write_intent


def test_profile_measures_what_was_planted(prose):
    texts = [prose[0], prose[0], prose[1] + " mail me: a.b@example.com", "<html><body><p>x</p></body></html>",
             "def f(x):\n    return x\n\nclass A:\n    pass\n"]
    p = profile_texts(texts)
    assert p.exact_dup_rate == pytest.approx(1 / 5)
    assert p.pii_doc_share == pytest.approx(1 / 5) and p.pii_per_1k_docs["email"] == 200
    assert p.markup_share == pytest.approx(1 / 5) and p.code_share == pytest.approx(1 / 5)
    assert p.languages.get("en", 0) >= 0.6
    assert pii_hits("call 14.02.28.02 or 10.0.0.1")["ip"] == 0  # no address / a private one


@pytest.fixture()
def pii_project(tmp_path, prose):
    root = agent_project(tmp_path / "proj")
    pii_and_dups_source(root / "landing" / "crawl", prose)
    return root


def test_propose_verifies_and_the_dry_run_meets_the_goal(pii_project):
    root = pii_project
    intent = load_intent(write_intent(root / "intent.yaml", name="crawl_clean", sources=["landing/crawl"],
                                      goal="a clean English corpus with no personal data and duplicates removed"))
    result = propose(intent, root, agent_config(root))
    assert result.status == "verified", result.reasons
    summary = result.summary()
    assert Path(summary["spec_path"]) == root / "assets" / "proposed" / "crawl_clean.yaml"
    spec = yaml.safe_load(Path(summary["spec_path"]).read_text())
    ops = [s["op"] for s in spec["stages"]]
    assert ops[0] == "ingest" and {"exact_dedup", "minhash_dedup", "pii_redact", "language_id"} <= set(ops)
    # the ledger of every stage balances, and the output holds no planted e-mail or phone, nor an exact copy
    ledger = summary["ledger"]
    assert set(ledger) == {s["name"] for s in spec["stages"]}
    for row in ledger.values():
        assert row["ledger_check"] and row["n_in"] == row["n_out"] + sum(row["rejected"].values()) + sum(row["quarantined"].values())
    assert ledger["raw"]["n_in"] == 24 + 6 + 5
    out = [t for f in list_parquet(Path(summary["dry_run_dir"]) / spec["stages"][-1]["name"]) for t in pq.read_table(f).column("text").to_pylist()]
    assert out and not any(sum(pii_hits(t).values()) for t in out)
    assert len(set(out)) == len(out)
    report = json.loads(Path(summary["report_path"].removesuffix(".md") + ".json").read_text())
    assert report["profile"]["pii_doc_share"] > 0.2 and report["profile"]["exact_dup_rate"] > 0.1
    checks = {f["check"]: f["passed"] for f in report["history"][-1]["findings"]}
    assert checks["goal_pii"] and checks["goal_dups"] and checks["ledger_checks"] and checks["goal_language"]
    assert "projected_usd" in report["history"][-1]["dry_run"]["projection"]
    # the proposal is not loaded until approved; approval moves it in (no webserver here: reload says so)
    assert "crawl_clean" not in read_project(root).pipelines
    outcome = approve("crawl_clean", root, agent_config(root))
    assert outcome["reload"]["ok"] is False and "no Dagster webserver" in outcome["reload"]["detail"]
    project = read_project(root)
    assert "crawl_clean" in project.pipelines and not project.problems
    assert any(getattr(e, "pipeline", None) == "crawl_clean" for _, e in project.sensors)
    # the same name again is now a clash, refused before any planning
    again = propose(intent, root, agent_config(root))
    assert again.status == "rejected" and "name_clash" in again.reasons[0] and not again.rounds


def test_cli_propose_prints_one_json_object_and_reject_keeps_a_record(pii_project, capsys):
    root = pii_project
    write_intent(root / "i.yaml", goal="deduplicated text, keep every language", sources=["landing/crawl"], name="dedup_only")
    code = main(["agent", "propose", str(root / "i.yaml"), "--project", str(root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "verified" and out["name"] == "dedup_only"
    assert set(out) >= {"name", "status", "reasons", "spec_path", "report_path", "dry_run_dir", "ledger"}
    assert Path(out["dry_run_dir"]).is_dir() and all(list_parquet(Path(out["dry_run_dir"]) / stage / "data") for stage in out["ledger"])
    assert main(["agent", "reject", "dedup_only", "--why", "too lax", "--project", str(root)]) == 0
    capsys.readouterr()
    record = json.loads((root / "assets/proposed/rejected/dedup_only.report.json").read_text())
    assert record["status"] == "rejected_by_user" and record["user_rejections"][0]["why"] == "too lax"
    assert not (root / "assets/proposed/dedup_only.yaml").exists()
    # hostile intents: a source outside the project, an unparseable file
    write_intent(root / "evil.yaml", goal="anything at all", sources=["../../etc"])
    assert main(["agent", "propose", str(root / "evil.yaml"), "--project", str(root)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "rejected" and "path_escape" in out["reasons"][0]
    (root / "garbage.yaml").write_text("goal: [\n")
    assert main(["agent", "propose", str(root / "garbage.yaml"), "--project", str(root)]) == 1
    assert "invalid YAML" in json.loads(capsys.readouterr().out)["reasons"][0]


def test_a_failed_verification_is_repaired_and_every_round_recorded(tmp_path, prose):
    """Short documents: Gopher's default quality filter would drop nearly all of them; the
    verifier says so, the planner relaxes that stage, the next round verifies (and, with
    auto_approve, is approved at once)."""
    from tests.conftest import write_jsonl

    root = agent_project(tmp_path / "proj", bounds={"max_stage_drop": 0.5}, auto_approve=True)
    sentences = [s.strip() + "." for text in prose for s in text.replace("\n", " ").split(". ") if 12 <= len(s.split()) <= 25]
    write_jsonl(root / "landing" / "notes" / "n.jsonl", [{"id": f"s{i}", "text": s} for i, s in enumerate(sentences[:40])])
    result = propose(load_intent(write_intent(root / "i.yaml", goal="English text", sources=["landing/notes"], name="notes")),
                     root, agent_config(root))
    assert result.status == "verified", result.reasons
    assert len(result.rounds) >= 2
    first = {f.check: f for f in result.rounds[0].failed}
    assert "stage_drop_too_high" in first and first["stage_drop_too_high"].op == "gopher_quality"
    assert any("gopher_quality relaxed" in n or "gopher_quality removed" in n for n in result.rounds[-1].notes)
    report = (root / "assets" / "proposed" / "notes.report.md").read_text()
    assert "## Round 0" in report and "## Round 1" in report and "stage_drop_too_high" in report
    # auto_approve: the verified spec went straight into assets/ (no webserver to reload here)
    assert result.approved["spec"] == str(root / "assets" / "notes.yaml") and (root / "assets" / "notes.yaml").exists() and not (root / "assets" / "proposed" / "notes.yaml").exists()
    assert "notes" in read_project(root).pipelines
