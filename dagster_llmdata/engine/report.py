"""Plain-text views of what the pipelines did, read from the ledgers on disk."""

from __future__ import annotations

from pathlib import Path

from dagster_llmdata.io.parquet_store import iter_batches, list_parquet, read_schema
from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.io.ledger import load_record
from dagster_llmdata.spec.pipeline import PipelineSpec


def stage_rows(spec: PipelineSpec, root: Path) -> list[dict]:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    rows = []
    for stage in spec.stages:
        totals = {"stage": stage.name, "op": stage.op, "partitions": 0, "n_in": 0, "n_out": 0, "rejected": {}, "quarantined": {}, "skipped": {}}
        for part in layout.partitions_on_disk(stage.name):
            record = load_record(layout.data_dir(stage.name, part))
            if not record:
                continue
            led = record["ledger"]
            totals["partitions"] += 1
            totals["n_in"] += led["n_in"]
            totals["n_out"] += led["n_out"]
            for key in ("rejected", "quarantined"):
                for reason, n in led[key].items():
                    totals[key][reason] = totals[key].get(reason, 0) + n
            # files a source passed over without reading (hidden ones): not documents, so not in the ledger
            for name, n in record.get("metadata_plain", {}).items():
                if name.startswith("skipped_") and isinstance(n, int) and n:
                    what = name.removeprefix("skipped_")
                    totals["skipped"][what] = totals["skipped"].get(what, 0) + n
        rows.append(totals)
    return rows


def stage_table(spec: PipelineSpec, root: Path) -> str:
    lines = [f"pipeline {spec.pipeline}", f"{'stage':22s} {'op':18s} {'in':>8s} {'kept':>8s} {'dropped':>8s} {'quar.':>6s}  reasons"]
    for r in stage_rows(spec, root):
        dropped = sum(r["rejected"].values())
        quarantined = sum(r["quarantined"].values())
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(r["rejected"].items(), key=lambda kv: -kv[1]))
        if r["quarantined"]:
            reasons += ("; " if reasons else "") + "quarantined: " + ", ".join(f"{k}={v}" for k, v in r["quarantined"].items())
        if r["skipped"]:
            reasons += ("; " if reasons else "") + "skipped (not read): " + ", ".join(f"{k}={v}" for k, v in r["skipped"].items())
        lines.append(f"{r['stage']:22s} {r['op']:18s} {r['n_in']:8d} {r['n_out']:8d} {dropped:8d} {quarantined:6d}  {reasons}")
    return "\n".join(lines)


def drop_examples(folder: Path, per_reason: int = 3) -> tuple[dict[str, int], dict[str, list[dict]]]:
    """Counts per reason and the first `per_reason` dropped rows of each, from a rejected or
    quarantine dataset (streamed; only the columns shown are read)."""
    files = list_parquet(folder)
    schema = read_schema(files)
    columns = [c for c in ("id", "reason", "kept_id", "value", "threshold", "text") if schema is not None and c in schema.names]
    seen: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for batch in iter_batches(files, columns=columns):
        for row in batch.to_pylist():
            reason = str(row.get("reason"))
            counts[reason] = counts.get(reason, 0) + 1
            if len(seen.setdefault(reason, [])) < per_reason:
                seen[reason].append(row)
    return counts, seen


def explain_drop(row: dict) -> str:
    """`value 12 < 50`-style note for a dropped row that carries its measure, or the id kept in its place."""
    parts = []
    if row.get("value") is not None:
        parts.append(f"value {row['value']:.4g}" + (f", threshold {row['threshold']:.4g}" if row.get("threshold") is not None else ""))
    if row.get("kept_id"):
        parts.append(f"kept {row['kept_id']}")
    return "; ".join(parts)


def rejected_examples(spec: PipelineSpec, root: Path, stage: str, per_reason: int = 3, quarantine: bool = False) -> str:
    """A few dropped documents per reason, with the measured value and threshold that failed, or
    the id each duplicate was dropped for."""
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    folder = layout.stage_root(stage) / ("quarantine" if quarantine else "rejected")
    counts, seen = drop_examples(folder, per_reason)
    lines = [f"{spec.pipeline}/{stage}: {sum(counts.values())} {'quarantined' if quarantine else 'rejected'} docs in {folder}"]
    for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"\n{reason}: {n}")
        for row in seen[reason]:
            text = " ".join((row.get("text") or "").split())[:150]
            note = explain_drop(row)
            lines.append(f"  {row.get('id')}{f' ({note})' if note else ''}: {text}")
    return "\n".join(lines)


def funnel_markdown(spec: PipelineSpec, root: Path) -> str:
    """The pipeline's funnel over every partition on disk, as a markdown table with a bar per stage."""
    rows = stage_rows(spec, root)
    top = max((r["n_in"] for r in rows), default=0) or 1
    lines = [
        f"Pipeline `{spec.pipeline}`, all partitions on disk",
        "",
        "| stage | op | partitions | in | kept | dropped | quarantined | kept of first input | top reasons |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        dropped, quarantined = sum(r["rejected"].values()), sum(r["quarantined"].values())
        share = r["n_out"] / top
        bar = "█" * round(share * 20) or ("▏" if r["n_out"] else "")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted({**r["rejected"], **r["quarantined"]}.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {r['stage']} | {r['op']} | {r['partitions']} | {r['n_in']} | {r['n_out']} | {dropped} | {quarantined} "
                     f"| {bar} {share:.1%} | {reasons} |")
    return "\n".join(lines)
