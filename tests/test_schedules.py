"""Schedules, declarative automation and freshness from sensors/*.yaml and the pipeline spec,
evaluated with Dagster's own helpers (schedule context, evaluate_automation_conditions, the
freshness checks run as a job) against a real instance."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_llmdata import load_project
from dagster_llmdata.definitions import read_project

from tests.conftest import write_jsonl

PARTITION = "web/batch1.jsonl"
NIGHTLY = dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone.utc)


def _with_sensors(project: Path, *entries: str) -> None:
    (project / "sensors" / "time.yaml").write_text("sensors:\n" + "".join(f"  - {e}\n" for e in entries))


def _key(stage: str) -> dg.AssetKey:
    return dg.AssetKey(["tiny", stage])


def _tick(defs: dg.Definitions, instance, when: dt.datetime = NIGHTLY):
    schedule = defs.get_schedule_def("tiny_schedule")
    return schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))


def test_nightly_schedule_registers_landed_files_and_requests_only_stale_partitions(project, instance, prose):
    _with_sensors(project, "{type: schedule, pipeline: tiny, cron: '0 2 * * *', timezone: Europe/Paris}")
    defs = load_project(project)
    schedule = defs.get_schedule_def("tiny_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED

    requests = _tick(defs, instance)
    assert [(r.partition_key, r.run_key) for r in requests] == [(PARTITION, f"{PARTITION}@{NIGHTLY.isoformat()}")]
    assert instance.get_dynamic_partitions("tiny_files") == [PARTITION]  # registered like the landing sensor does

    job = defs.resolve_job_def("tiny_job")
    assert job.execute_in_process(instance=instance, partition_key=PARTITION, resources=defs.resources).success
    skip = _tick(defs, instance, NIGHTLY + dt.timedelta(days=1))
    assert isinstance(skip, dg.SkipReason) and "up to date" in skip.skip_message

    write_jsonl(project / "landing/web/batch2.jsonl", [{"id": "late", "text": prose[20]}])
    requests = _tick(defs, instance, NIGHTLY + dt.timedelta(days=2))
    assert [r.partition_key for r in requests] == ["web/batch2.jsonl"]


def test_schedule_all_requests_every_partition(project, instance, prose):
    _with_sensors(project, "{type: schedule, name: weekly_full, pipeline: tiny, cron: '0 3 * * 0', partitions: all, default_status: running}")
    write_jsonl(project / "landing/web/batch2.jsonl", [{"id": "late", "text": prose[20]}])
    defs = load_project(project)
    schedule = defs.get_schedule_def("weekly_full")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    requests = schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHTLY))
    assert sorted(r.partition_key for r in requests) == [PARTITION, "web/batch2.jsonl"]


def test_bad_schedule_entries_are_reported_and_the_rest_loads(project):
    _with_sensors(project, "{type: schedule, pipeline: tiny, cron: 'every night'}",
                  "{type: schedule, pipeline: nope, cron: '0 2 * * *'}",
                  "{type: freshness, pipeline: tiny, max_age_hours: 0}",
                  "{type: freshness, pipeline: tiny, max_age_hours: 2, stages: [rawx]}")
    problems = [str(p) for p in read_project(project).problems]
    assert any("sensors.0.cron" in p for p in problems), problems
    assert any("sensors.2.max_age_hours" in p for p in problems), problems
    defs = load_project(project)
    assert [s.name for s in defs.sensors] == ["tiny_landing"]  # the landing sensor still loads
    desc = defs.get_assets_def(dg.AssetKey("specs")).specs_by_key[dg.AssetKey("specs")].description
    assert "unknown pipeline 'nope'" in desc and "unknown stages ['rawx']" in desc


def test_eager_automation_materialises_a_landed_partition_then_keeps_downstream_fresh(project, instance):
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text() + "automation: {condition: eager}\n")
    defs = load_project(project)
    stages = ["raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards"]
    assert all(isinstance(defs.get_assets_def(_key(s)).automation_conditions_by_key[_key(s)], dg.AutomationCondition) for s in stages)

    result = dg.evaluate_automation_conditions(defs, instance)
    assert result.total_requested == 0  # no partition has landed
    instance.add_dynamic_partitions("tiny_files", [PARTITION])
    result = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    assert {s: result.get_requested_partitions(_key(s)) for s in stages} == {s: {PARTITION} for s in stages}

    job = defs.resolve_job_def("tiny_job")
    assert job.execute_in_process(instance=instance, partition_key=PARTITION, resources=defs.resources).success
    result = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    assert result.total_requested == 0  # everything is fresh

    # the first stage is re-materialised (new data for the partition): only what is downstream follows
    assert job.execute_in_process(instance=instance, partition_key=PARTITION, resources=defs.resources,
                                  asset_selection=[_key("raw")]).success
    result = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    assert result.get_requested_partitions(_key("raw")) == set()
    assert result.get_requested_partitions(_key("normalized")) == {PARTITION}


def test_on_cron_automation_waits_for_its_tick(project, instance):
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text() + "automation: {condition: on_cron, cron: '0 * * * *'}\n")
    defs = load_project(project)
    instance.add_dynamic_partitions("tiny_files", [PARTITION])
    start = dt.datetime(2026, 1, 1, 10, 20, tzinfo=dt.timezone.utc)
    result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=start)
    assert result.total_requested == 0
    result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=start + dt.timedelta(minutes=45), cursor=result.cursor)
    assert result.get_requested_partitions(_key("raw")) == {PARTITION}


def test_automation_spec_errors_name_the_field(project):
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text() + "automation: {condition: on_cron}\n")
    problems = [str(p) for p in read_project(project).problems]
    assert len(problems) == 1 and "tiny.yaml" in problems[0] and "`cron` is required" in problems[0]


def _run_freshness(defs: dg.Definitions, instance) -> dict[str, bool]:
    checks = [c for c in defs.asset_checks if any(k.name == "freshness_check" for k in c.check_keys)]
    job = dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*checks))
    with_job = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources)
    result = with_job.resolve_job_def("freshness").execute_in_process(instance=instance, raise_on_error=False)
    return {e.asset_check_evaluation_data.asset_key.path[-1]: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_freshness_checks_flag_a_pipeline_not_run_for_its_max_age(project, instance):
    _with_sensors(project, "{type: freshness, pipeline: tiny, max_age_hours: 1, stages: [raw, shards]}")
    defs = load_project(project)
    assert "tiny_freshness" in [s.name for s in defs.sensors]
    assert _run_freshness(defs, instance) == {"raw": False, "shards": False}  # never materialised

    instance.add_dynamic_partitions("tiny_files", [PARTITION])
    assert defs.resolve_job_def("tiny_job").execute_in_process(instance=instance, partition_key=PARTITION, resources=defs.resources).success
    assert _run_freshness(defs, instance) == {"raw": True, "shards": True}
    _with_sensors(project, "{type: freshness, pipeline: tiny, max_age_hours: 0.0002}")  # 0.72 s
    time.sleep(1)
    assert set(_run_freshness(load_project(project), instance).values()) == {False}


@pytest.mark.parametrize("entry", ["{type: schedule, pipeline: tiny, cron: '0 2 * * *', extra: 1}", "{type: cronjob, pipeline: tiny}"])
def test_unknown_fields_and_types(project, entry):
    _with_sensors(project, entry)
    problems = " ".join(str(p) for p in read_project(project).problems)
    assert ("extra" in problems and "not permitted" in problems) or "unknown sensor type 'cronjob'" in problems
