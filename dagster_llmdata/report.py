"""Plain-text views of what the pipelines did, read from the ledgers on disk."""

from __future__ import annotations

from pathlib import Path

from .layout import PipelineLayout
from .ledger import load_record
from .spec import PipelineSpec


def stage_rows(spec: PipelineSpec, root: Path) -> list[dict]:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    rows = []
    for stage in spec.stages:
        totals = {"stage": stage.name, "op": stage.op, "partitions": 0, "n_in": 0, "n_out": 0, "rejected": {}, "quarantined": {}}
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
        lines.append(f"{r['stage']:22s} {r['op']:18s} {r['n_in']:8d} {r['n_out']:8d} {dropped:8d} {quarantined:6d}  {reasons}")
    return "\n".join(lines)


def rejected_examples(spec: PipelineSpec, root: Path, stage: str, per_reason: int = 3, quarantine: bool = False) -> str:
    """A few dropped documents per reason, with the id each duplicate was dropped for."""
    from .io.parquet_store import iter_batches, list_parquet

    spec.stage(stage)  # unknown stage -> StopIteration -> caller reports it
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    folder = layout.stage_root(stage) / ("quarantine" if quarantine else "rejected")
    seen: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for batch in iter_batches(list_parquet(folder), columns=["id", "reason", "kept_id", "text"]):
        for row in batch.to_pylist():
            counts[row["reason"]] = counts.get(row["reason"], 0) + 1
            if len(seen.setdefault(row["reason"], [])) < per_reason:
                seen[row["reason"]].append(row)
    lines = [f"{spec.pipeline}/{stage}: {sum(counts.values())} {'quarantined' if quarantine else 'rejected'} docs in {folder}"]
    for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"\n{reason}: {n}")
        for row in seen[reason]:
            text = " ".join((row["text"] or "").split())[:150]
            kept = f" (kept {row['kept_id']})" if row["kept_id"] else ""
            lines.append(f"  {row['id']}{kept}: {text}")
    return "\n".join(lines)
