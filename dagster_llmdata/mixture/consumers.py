"""Who consumed a pipeline's partition: the mixture manifests that pinned its documents, and the
training runs recorded as training on those manifests. A takedown reports them; they are the
evidence of what was trained on, so nothing here rewrites them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dagster_llmdata.errors import ManifestError, StoreError
from dagster_llmdata.io.layout import partition_folder
from dagster_llmdata.mixture.feedback import FeedbackStore
from dagster_llmdata.mixture.manifest import LATEST, read_manifest, resolved_inputs
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.store.lance_store import SampleStore


@dataclass
class ManifestUse:
    mixture: str
    version: str
    path: str
    pinned: list[str] = field(default_factory=list)  # what of the partition it pinned, one line per input


@dataclass
class RunUse:
    run_id: str
    mixture: str | None
    mixture_version: str
    from_step: int
    store: str


def manifest_files(root: Path, mixtures: Mapping[str, MixtureSpec]) -> list[Path]:
    """Every manifest under the project's mixture storage folders (also those of mixtures whose
    spec is gone: their manifests are evidence too); latest.json is a copy of one of them."""
    storages = {(root / spec.storage).resolve() for spec in mixtures.values()}
    storages.add((root / MixtureSpec.model_fields["storage"].default).resolve())
    return sorted(p for s in storages for p in s.glob("*/manifests/*.json") if p.name != LATEST and not p.name.startswith("."))


def manifests_consuming(root: Path, mixtures: Mapping[str, MixtureSpec], pipeline: str, partition: str) -> tuple[list[ManifestUse], list[str]]:
    """Manifests that pinned documents of `pipeline`'s `partition` (Parquet files of it, or a Lance
    version holding its rows), and a line for each manifest or input that could not be checked."""
    folder = partition_folder(partition)
    uses, problems = [], []
    for path in manifest_files(root, mixtures):
        try:
            manifest = read_manifest(path, root)
        except ManifestError as exc:
            problems.append(f"manifest not checked: {exc}")
            continue
        pinned = []
        for inp in resolved_inputs(manifest):
            if str(inp.get("dataset") or "").partition("/")[0] != pipeline:
                continue
            if inp.get("kind") == "lance":
                try:
                    rows = _lance_partition_rows(inp, folder)
                except StoreError as exc:
                    problems.append(f"{path}: input {inp['dataset']} not checked: {exc}")
                    continue
                if rows:
                    pinned.append(f"{inp['dataset']}: {rows} rows in LanceDB table {inp['table']!r} v{inp['version']}")
            else:
                files = [f for f in inp.get("files", []) if f.get("partition") == folder]
                if files:
                    pinned.append(f"{inp['dataset']}: {len(files)} file(s), {sum(f.get('rows', 0) for f in files)} rows")
        if pinned:
            uses.append(ManifestUse(manifest.mixture, manifest.version, str(path), pinned))
    return uses, problems


def _lance_partition_rows(inp: dict, folder: str) -> int:
    store = SampleStore(inp["uri"], inp["table"])
    try:
        return store.partition_rows(folder, inp["version"])
    except StoreError:
        if not inp.get("tag"):
            raise
        return store.partition_rows(folder, inp["tag"])


def runs_consuming(root: Path, mixtures: Mapping[str, MixtureSpec], versions: list[str]) -> list[RunUse]:
    """Training runs that the project's feedback stores record as training on these manifest versions."""
    stores = sorted({(root / spec.feedback_store).resolve() for spec in mixtures.values()})
    out = []
    for path in stores:
        if versions and path.is_file():  # never create a store just to find it empty
            out += [RunUse(store=str(path), **row) for row in FeedbackStore(path).runs_consuming(versions)]
    return out


__all__ = ["ManifestUse", "RunUse", "manifests_consuming", "runs_consuming"]
