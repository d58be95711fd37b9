"""One stage over one partition: where its input is, where its outputs go, and the datatrove
executor it runs on. Dagster-free, so operators run the same from Python, the CLI or an asset."""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_llmdata.io.docsteps import DatasetWriter, ParquetDocReader
from dagster_llmdata.io.parquet_store import IN_PROGRESS, list_parquet, read_schema, write_empty
from dagster_llmdata.io.schema import CORE_SCHEMA, drop_schema, with_columns
from dagster_llmdata.io.ledger import remove_record
from dagster_llmdata.config import ExecutorConfig
from dagster_llmdata.io.ray_executor import run_on_ray


@dataclass(frozen=True)
class StageContext:
    """Where a run sits beyond its own folders, for operators that look past their input (a dedup
    index beside the stage, a store tagging rows with lineage). Frozen: operators read it, never
    pass state back through it. The defaults are a run outside any pipeline."""

    partition: str | None = None  # the partition's folder name (standalone: the input's path)
    stage_root: Path | None = None  # the stage's folder over all partitions (None: no pipeline)
    lineage: tuple[str, ...] = ()  # <pipeline>/<stage> from the source to this stage
    dagster_run_id: str | None = None
    source_root: Path | None = None  # the folder a source's raw paths are taken relative to
    project_root: Path | None = None  # relative paths in params (eval sets) resolve against it
    # a source stage reading another pipeline's stage: that stage as `<pipeline>/<stage>` (its kept
    # Parquet files are the run's input files); None: the source reads raw files
    upstream_dataset: str | None = None


@dataclass
class StageRun:
    stage: str
    input_files: list[str]
    output_dir: Path
    rejected_dir: Path
    quarantine_dir: Path
    work_dir: Path
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    input_schema: pa.Schema | None = None
    context: StageContext = field(default_factory=StageContext)

    def __post_init__(self) -> None:
        for attr in ("output_dir", "rejected_dir", "quarantine_dir", "work_dir"):
            setattr(self, attr, Path(getattr(self, attr)))
        if self.input_schema is None:
            self.input_schema = read_schema(self.input_files) or CORE_SCHEMA
        self._executions = 0

    @property
    def executions(self) -> int:
        """How many datatrove pipelines this stage ran on its executor (0: it worked in-process)."""
        return self._executions

    def reset_outputs(self) -> None:
        """A re-materialisation replaces the partition's outputs, never mixes old and new parts."""
        folders = (self.output_dir, self.rejected_dir, self.quarantine_dir, self.work_dir)
        clear_outputs(*folders)
        for d in folders:
            d.mkdir(parents=True, exist_ok=True)

    def output_schema(self, produced: dict[str, pa.DataType]) -> pa.Schema:
        return with_columns(self.input_schema, produced)

    def reader(self) -> ParquetDocReader:
        return ParquetDocReader(self.input_files, progress_label=self.stage)

    def kept_writer(self, schema: pa.Schema) -> DatasetWriter:
        return DatasetWriter(str(self.output_dir), schema)

    def rejected_writer(self, schema: pa.Schema) -> DatasetWriter:
        return DatasetWriter(str(self.rejected_dir), drop_schema(schema))

    def quarantine_writer(self, schema: pa.Schema) -> DatasetWriter:
        return DatasetWriter(str(self.quarantine_dir), drop_schema(schema))

    @functools.cached_property
    def tasks(self) -> int:
        # the reader splits by row group: more tasks than row groups would only idle
        groups = sum(pq.ParquetFile(f).num_row_groups for f in self.input_files if f.endswith(".parquet") and Path(f).is_file())
        return max(1, min(self.executor.tasks, groups or len(self.input_files) or 1))

    def execute(self, pipeline: list, tasks: int | None = None, name: str | None = None) -> dict[str, dict[str, float]]:
        """Run a datatrove pipeline on the configured executor with a fresh logging dir
        (datatrove's skip_completed would otherwise skip ranks of an earlier run).
        Returns {step name: {stat: value}}."""
        self._executions += 1
        logging_dir = self.work_dir / f"logs-{self._executions:02d}-{name or 'main'}"
        tasks = tasks or self.tasks
        workers = min(self.executor.workers, tasks)
        if self.executor.kind == "ray":

            return stats_to_dict(run_on_ray(pipeline, tasks, workers, logging_dir, self.executor))
        from datatrove.executor import LocalPipelineExecutor

        executor = LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), start_method=self.executor.start_method,
        )
        with _sigterm_deliverable():
            return stats_to_dict(executor.run())

    def finalize(self, schema: pa.Schema) -> None:
        """Every dataset folder ends with at least one file, so downstream knows its schema; the
        writers' in-progress folders are empty once every part was closed."""
        for d in (self.output_dir, self.rejected_dir, self.quarantine_dir):
            with contextlib.suppress(OSError):
                (d / IN_PROGRESS).rmdir()
        if not list_parquet(self.output_dir):
            write_empty(self.output_dir, schema)


def clear_outputs(output_dir: Path, *other_dirs: Path) -> None:
    """Delete a stage's outputs for one partition. The completion record goes first, so a run
    killed while clearing is never taken as done."""
    remove_record(output_dir)
    for d in (output_dir, *other_dirs):
        shutil.rmtree(d, ignore_errors=True)


def stats_to_dict(stats) -> dict[str, dict[str, float]]:
    """datatrove PipelineStats -> plain {step: {stat: total}}."""
    out: dict[str, dict[str, float]] = {}
    if stats is None:
        return out
    for step in stats.stats:
        values = {key: _total(metric) for key, metric in step.stats.items()}
        values["time_s"] = _total(step.time_stats)  # summed over tasks: CPU-seconds
        out[step.name.split(": ", 1)[-1]] = values  # "TYPE: name" -> name
    return out


def _total(metric) -> float:
    """A stat's total: a MetricStats in memory, a dict or a bare number once read back from JSON
    (the Ray executor's stats come back that way)."""
    if isinstance(metric, dict):
        return float(metric.get("total", 0))
    return float(getattr(metric, "total", metric))


@contextlib.contextmanager
def _sigterm_deliverable():
    """datatrove's worker pool stops its workers with SIGTERM when it closes: a process that
    ignores SIGTERM (some supervisors start it so) hands that on to the workers and the pool never
    closes. For the executor's run, an ignored SIGTERM gets its default action back."""
    ignored = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
