"""PipelineSpec -> Dagster objects: one partitioned asset per stage (deps = lineage), a blocking
ledger check on each, a job per pipeline. The only module that turns specs into Dagster objects."""


import hashlib
import warnings
import json
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
import pyarrow as pa
import pyarrow.parquet as pq

from .execute import StageOutcome, run_stage
from .io.parquet_store import list_parquet, read_sample
from .io.schema import CORE_SCHEMA
from .ledger import Ledger, count_ledger, load_record, save_record
from .layout import PipelineLayout
from .operators import Operator, get_operator
from .operators.ingest import expand_input
from .spec import PipelineSpec, StageSpec
from .stage_run import StageRun

# partitioned asset checks are a Dagster preview feature; they are what a per-partition ledger needs
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

LEDGER_CHECK = "ledger_balances"
SAMPLE_ROWS = 5


def partitions_def_for(spec: PipelineSpec) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{spec.pipeline}_files")


def source_path(spec: PipelineSpec, root: Path, partition: str) -> tuple[str, Path]:
    """Partition key `<source>/<entry>` -> (source name, the file or folder it names)."""
    source_name, _, entry = partition.partition("/")
    source = spec.source(source_name)
    return source_name, (root / source.landing / entry)


def build_pipeline_assets(spec: PipelineSpec, root: Path) -> list[dg.AssetsDefinition]:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    partitions = partitions_def_for(spec)
    versions = lineage_code_versions(spec)
    return [_stage_asset(spec, stage, layout, partitions, root, versions[stage.name]) for stage in spec.stages]


def lineage_code_versions(spec: PipelineSpec) -> dict[str, str]:
    """A stage's code version = its operator version + params, chained with its upstream's: a spec
    change marks that stage and everything downstream of it stale in Dagster, nothing upstream."""
    versions: dict[str, str] = {}
    for stage in spec.stages:
        own = get_operator(stage.op)(stage.params).code_version
        upstream = versions.get(stage.input or "", "")
        chain = hashlib.sha1(f"{upstream}|{own}".encode()).hexdigest()[:8]
        versions[stage.name] = f"{own}.{chain}"
    return versions


def build_pipeline_job(spec: PipelineSpec) -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        f"{spec.pipeline}_job",
        selection=dg.AssetSelection.groups(spec.pipeline),
        partitions_def=partitions_def_for(spec),
        description=f"Materialise every stage of pipeline {spec.pipeline!r} for one source partition.",
    )


def _stage_asset(
    spec: PipelineSpec,
    stage: StageSpec,
    layout: PipelineLayout,
    partitions: dg.DynamicPartitionsDefinition,
    root: Path,
    code_version: str,
) -> dg.AssetsDefinition:
    op_cls = get_operator(stage.op)
    op = op_cls(stage.params)
    key = dg.AssetKey([spec.pipeline, stage.name])
    upstream = dg.AssetKey([spec.pipeline, stage.input]) if stage.input else None
    description = stage.description or f"`{op.name}`: {op.description}"

    @dg.asset(
        key=key,
        deps=[upstream] if upstream else [],
        group_name=spec.pipeline,
        partitions_def=partitions,
        code_version=code_version,
        description=description,
        kinds=set(op.kinds) | {"parquet"},
        metadata={"operator": op.name, "params": dg.MetadataValue.json(op.params.model_dump(mode="json"))},
        check_specs=[
            dg.AssetCheckSpec(
                LEDGER_CHECK,
                asset=key,
                blocking=True,
                partitions_def=partitions,
                description="n_in = n_out + rejected (by reason) + quarantined, recounted from the files on disk",
            )
        ],
    )
    def _stage(context: dg.AssetExecutionContext):
        partition = context.partition_key
        run, run_op = _stage_run(spec, stage, op, layout, partition, root)
        fingerprint = _fingerprint(f"{code_version}|{run_op.code_version}", run.input_files)
        record = load_record(run.output_dir)
        if record and record.get("fingerprint") == fingerprint:
            # same inputs, same code: nothing to do
            context.log.info(f"{stage.name}[{partition}] is up to date; skipping")
            ledger = count_ledger(record["ledger"]["n_in"], run.output_dir, run.rejected_dir, run.quarantine_dir)
            metadata = {**record.get("metadata_plain", {}), "llmdata/skipped": True}
            yield dg.MaterializeResult(
                metadata=_materialisation_metadata(ledger, None, run, upstream, metadata),
                data_version=dg.DataVersion(record["data_version"]),
            )
            yield _ledger_check(ledger)
            return

        outcome = run_stage(run_op, run)
        ledger = count_ledger(outcome.ledger.n_in, run.output_dir, run.rejected_dir, run.quarantine_dir)
        data_version = hashlib.sha1(f"{fingerprint}{json.dumps(ledger.to_dict(), sort_keys=True)}".encode()).hexdigest()[:16]
        plain = {k: v for k, v in outcome.metadata.items() if isinstance(v, (int, float, str, bool))}
        save_record(
            run.output_dir,
            {"fingerprint": fingerprint, "ledger": ledger.to_dict(), "data_version": data_version, "metadata_plain": plain},
        )
        context.log.info(
            f"{stage.name}[{partition}]: in {ledger.n_in}, kept {ledger.n_out}, rejected {ledger.rejected}, "
            f"quarantined {ledger.quarantined} in {outcome.seconds:.1f}s"
        )
        yield dg.MaterializeResult(
            metadata=_materialisation_metadata(ledger, outcome, run, upstream, outcome.metadata),
            data_version=dg.DataVersion(data_version),
        )
        yield _ledger_check(ledger)

    return _stage


def _stage_run(
    spec: PipelineSpec, stage: StageSpec, op: Operator, layout: PipelineLayout, partition: str, root: Path
) -> tuple[StageRun, Operator]:
    """The run for one partition, and the operator to run (ingest takes its source's settings)."""
    context: dict[str, Any] = {}
    if stage.op == "ingest":
        source_name, path = source_path(spec, root, partition)
        if not path.exists():
            raise dg.Failure(f"partition {partition!r}: {path} does not exist (was the landing file removed?)")
        input_files = expand_input(path)
        src = spec.source(source_name)
        params = {**src.model_dump(include={"format", "text_field", "id_field", "domain", "domain_field"}), **stage.params}
        params["source"] = source_name
        op = type(op)(params)
        context["source_root"] = str(path.parent)
        input_schema = CORE_SCHEMA
    else:
        upstream_dir = layout.data_dir(stage.input, partition)
        input_files = list_parquet(upstream_dir)
        if not input_files:
            raise dg.Failure(f"{stage.name}[{partition}]: upstream {stage.input!r} has no data at {upstream_dir}")
        input_schema = None
        context["peer_output_dirs"] = [
            layout.data_dir(stage.name, p) for p in layout.partitions_on_disk(stage.name) if p != partition
        ]
    run = StageRun(
        stage=stage.name,
        input_files=input_files,
        output_dir=layout.data_dir(stage.name, partition),
        rejected_dir=layout.rejected_dir(stage.name, partition),
        quarantine_dir=layout.quarantine_dir(stage.name, partition),
        work_dir=layout.work_dir(stage.name, partition),
        executor=spec.executor,
        input_schema=input_schema,
        context=context,
    )
    return run, op


def _fingerprint(code_version: str, files: list[str]) -> str:
    h = hashlib.sha1(code_version.encode())
    for f in files:
        paths = [Path(f)] if Path(f).is_file() else sorted(p for p in Path(f).rglob("*") if p.is_file())
        for p in paths:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _ledger_check(ledger: Ledger) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=LEDGER_CHECK,
        passed=ledger.balanced,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if ledger.balanced else f"{ledger.missing} documents are unaccounted for",
        metadata={
            "n_in": ledger.n_in,
            "n_out": ledger.n_out,
            "n_rejected": ledger.n_rejected,
            "n_quarantined": ledger.n_quarantined,
            "unaccounted": ledger.missing,
        },
    )


def _materialisation_metadata(
    ledger: Ledger, outcome: StageOutcome | None, run: StageRun, upstream: dg.AssetKey | None, extra: dict[str, Any]
) -> dict[str, Any]:
    files = list_parquet(run.output_dir)
    schema = pa.unify_schemas([pq.read_schema(f) for f in files]) if files else run.input_schema
    md: dict[str, Any] = {
        "dagster/row_count": ledger.n_out,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]
        ),
        "n_in": ledger.n_in,
        "n_out": ledger.n_out,
        "n_rejected": ledger.n_rejected,
        "n_quarantined": ledger.n_quarantined,
        "data_path": dg.MetadataValue.path(str(run.output_dir)),
        "rejected_path": dg.MetadataValue.path(str(run.rejected_dir)),
    }
    for reason, n in ledger.rejected.items():
        md[f"dropped/{reason}"] = n
    for reason, n in ledger.quarantined.items():
        md[f"quarantined/{reason}"] = n
    if upstream is not None:
        md["dagster/column_lineage"] = dg.TableColumnLineage(
            deps_by_column={
                f.name: [dg.TableColumnDep(asset_key=upstream, column_name=f.name if f.name in run.input_schema.names else "text")]
                for f in schema
            }
        )
    if outcome is not None:
        md["runtime_s"] = round(outcome.seconds, 3)
        md["docs_per_s"] = round(outcome.docs_per_second, 1)
    sample = read_sample(files, SAMPLE_ROWS, columns=[c for c in ("id", "text", "domain", "lang") if c in schema.names])
    if sample:
        cols = list(sample[0])
        md["sample"] = dg.MetadataValue.table(
            records=[dg.TableRecord({c: _short(r[c]) for c in cols}) for r in sample],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in cols]),
        )
    for k, v in extra.items():
        if k.startswith("llmdata/") or isinstance(v, (int, float, str, bool)):
            md[k] = v
        elif isinstance(v, (dict, list)):
            md[k] = dg.MetadataValue.json(v)
    return md


def _short(value: Any, n: int = 160) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"




__all__ = ["build_pipeline_assets", "build_pipeline_job", "partitions_def_for", "LEDGER_CHECK"]
