"""decontaminate: drop training docs that share a long n-gram (13 words by default) with an
evaluation set named in the spec (JSONL or Parquet files of benchmark questions and answers).
Each dropped row records which eval set and which n-gram matched."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document
from pydantic import BaseModel, ConfigDict, Field

from dagster_llmdata.dedup.shingles import Shingler
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.verdict import Reject
from dagster_llmdata.operators.base import DocFunction, Operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.errors import StageFailed

# the words Shingler hashes: runs of ASCII letters, digits, '_' or non-ASCII characters
_WORD = re.compile(r"[A-Za-z0-9_\u0080-\U0010FFFF]+")


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name recorded on every doc this eval set contaminates.")
    path: str = Field(description="A JSONL (.jsonl, .jsonl.gz) or Parquet file, or a folder of them; relative to the project.")
    fields: list[str] = Field(
        default_factory=list, description="Text fields of a record to check (e.g. question, answer); empty: every string field."
    )


class DecontaminateParams(OperatorParams):
    eval_sets: list[EvalSet] = Field(min_length=1, description="The evaluation sets to keep out of training data.")
    n_grams: int = Field(13, ge=3, le=64, description="Length in words of the n-grams compared (13 after GPT-3's decontamination).")


def _records(path: Path) -> list[dict]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            out += pq.read_table(f).to_pylist()
        elif f.name.endswith((".jsonl", ".jsonl.gz", ".json")):
            import gzip

            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            raise StageFailed(f"eval set file {f}: line {n} is not JSON") from None
    return out


def _texts_of(record: Any, fields: list[str]) -> list[str]:
    if not isinstance(record, dict):
        return [record] if isinstance(record, str) else []
    values = [record.get(f) for f in fields] if fields else list(record.values())
    out: list[str] = []
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):  # answer lists, choices
            out += [x for x in v if isinstance(x, str)]
    return out


class EvalNgrams(DocFunction):
    """Rejects a doc sharing an n-gram with an eval set; the n-gram sets load once per task."""

    def __init__(self, sets: dict[str, list[str]], n: int):
        super().__init__()
        self.sets, self.n = sets, n
        self._hashes: dict[str, np.ndarray] | None = None

    def __enter__(self):
        shingler = Shingler("word", self.n)
        full = {}
        for name, texts in self.sets.items():
            hashes, docs = shingler.batch(texts)
            # only whole n-grams: an eval text shorter than n words would match any doc that contains it
            long_enough = np.array([len(_WORD.findall(t.lower())) >= self.n for t in texts], dtype=bool)
            full[name] = np.unique(hashes[long_enough[docs]]) if len(docs) else hashes
        self._hashes = full
        return self

    def __exit__(self, *exc) -> None:
        self._hashes = None

    def __call__(self, doc: Document):
        hashes, _ = Shingler("word", self.n).batch([doc.text])
        for name, known in (self._hashes or {}).items():
            hit = np.flatnonzero(np.isin(hashes, known))
            if len(hit):
                words = _WORD.findall(doc.text.lower())
                doc.metadata["contamination_set"] = name
                doc.metadata["contamination_ngram"] = " ".join(words[hit[0] : hit[0] + self.n])
                self.counters[f"contaminated_by_{name}"] += 1
                return Reject("eval_contamination", value=float(len(hit)))
        return True


class Decontaminate(Operator):
    name = "decontaminate"
    version = "1"
    description = (
        "Drop docs sharing an n-gram (13 lowercased words by default) with an evaluation set named in the spec "
        "(JSONL or Parquet files of benchmark questions and answers). A dropped row records `contamination_set`, "
        "`contamination_ngram` (the first match) and, as `value`, how many of its n-grams matched. Eval files are "
        "part of the fingerprint: changing one re-runs the stage."
    )
    Params = DecontaminateParams
    produces = {"contamination_set": pa.string(), "contamination_ngram": pa.string()}

    def _paths(self, run: StageRun) -> dict[str, Path]:
        root = Path(run.context.project_root or os.getcwd())
        return {s.name: (root / s.path) for s in self.params.eval_sets}

    def compared_state(self, run: StageRun) -> str:
        h = hashlib.sha1()
        for name, path in self._paths(run).items():
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                st = f.stat() if f.exists() else None
                h.update(f"{name}\0{f}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def run(self, run: StageRun) -> dict[str, Any]:
        sets: dict[str, list[str]] = {}
        for spec in self.params.eval_sets:
            path = self._paths(run)[spec.name]
            if not path.exists():
                raise StageFailed(f"eval set {spec.name!r}: {path} does not exist")
            sets[spec.name] = [t for r in _records(path) for t in _texts_of(r, spec.fields)]
        schema = run.output_schema(self.produced_columns())
        fn = EvalNgrams(sets, self.params.n_grams)
        stats = run.execute([run.reader(), self.routed_step(run, schema, fn), run.kept_writer(schema)])
        counted = {k: int(v) for step in stats.values() for k, v in step.items() if k.startswith("contaminated_by_")}
        return {**counted, "eval_texts": sum(map(len, sets.values()))}
